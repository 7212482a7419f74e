use super::*;

const FILE: &str = r#"
version: "3.8"
services:
  web:
    image: shoal-test-busybox
    command: httpd -f -p 80 -h /www
    deploy:
      replicas: 3
      endpoint_mode: vip
      placement:
        constraints: [node.role==worker]
      update_config:
        parallelism: 2
        delay: 5s
        order: start-first
    ports:
      - "8080:80"
      - target: 53
        published: 5353
        protocol: udp
        mode: host
    networks:
      front:
        aliases: [www]
    environment:
      MODE: prod
      WORKERS: 4
    healthcheck:
      test: ["CMD", "nc", "-z", "localhost", "80"]
      interval: 2s
      retries: 3
  worker:
    command: ["sleep", "1000"]
    deploy:
      mode: global
networks:
  front:
    driver: overlay
    attachable: true
    ipam:
      config:
        - subnet: 198.19.60.0/24
"#;

fn planned(text: &str) -> Result<StackPlan> {
    planned_with(text, &|_| None).map(|(p, _)| p)
}

fn planned_with(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(StackPlan, Vec<String>)> {
    let src = load::Source {
        name: "/srv/shop/stack.yml".into(),
        text: text.into(),
    };
    plan_files("shop", &[src], env)
}

#[test]
fn a_stack_prefixes_names_and_labels_everything() {
    let p = planned(FILE).unwrap();
    let names: Vec<&str> = p.networks.iter().map(|n| n.name.as_str()).collect();
    // `worker` has no networks: it gets the stack's default network, as in Docker.
    assert_eq!(names, ["shop_front", "shop_default"]);
    let front = &p.networks[0];
    assert!(front.attachable);
    assert_eq!(front.ipam_options.configs[0].subnet, "198.19.60.0/24");
    assert_eq!(front.labels[NAMESPACE_LABEL], "shop");

    let web = &p
        .services
        .iter()
        .find(|s| s.spec.name == "shop_web")
        .unwrap()
        .spec;
    assert_eq!(web.labels[NAMESPACE_LABEL], "shop");
    assert_eq!(web.mode, ServiceMode::Replicated { replicas: 3 });
    let t = &web.task_template;
    assert_eq!(t.runtime, Runtime::Docker);
    assert_eq!(t.container_spec.image, "shoal-test-busybox");
    assert_eq!(
        t.container_spec.args,
        ["httpd", "-f", "-p", "80", "-h", "/www"]
    );
    assert!(t.container_spec.env.contains(&"WORKERS=4".to_string()));
    assert_eq!(t.placement.constraints, ["node.role==worker"]);
    assert_eq!(web.update_config.parallelism, 2);
    assert_eq!(web.update_config.delay, 5_000_000_000);
    assert_eq!(web.update_config.order, UpdateOrder::StartFirst);
    let ports = &web.endpoint_spec.ports;
    assert_eq!(ports.len(), 2);
    assert!(ports.iter().any(|p| p.published_port == 5353
        && p.protocol == Protocol::Udp
        && p.publish_mode == PublishMode::Host));
    let hc = t.container_spec.healthcheck.as_ref().unwrap();
    assert_eq!(hc.test[0], "CMD");
    assert_eq!(hc.interval, 2_000_000_000);
    let web_plan = p
        .services
        .iter()
        .find(|s| s.spec.name == "shop_web")
        .unwrap();
    assert_eq!(web_plan.networks[0].name, "shop_front");
    assert_eq!(
        web_plan.networks[0].aliases,
        ["www", "web"],
        "the Compose name is an alias too"
    );

    let worker = &p
        .services
        .iter()
        .find(|s| s.spec.name == "shop_worker")
        .unwrap();
    assert_eq!(worker.spec.task_template.runtime, Runtime::Native);
    assert_eq!(worker.spec.mode, ServiceMode::Global {});
    assert_eq!(worker.networks[0].name, "shop_default");
}

#[test]
fn unknown_keys_are_refused_with_their_line() {
    let text =
        "services:\n  web:\n    image: x\n    deploy:\n      replicas: 2\n      replicaz: 3\n";
    let err = planned(text).unwrap_err().to_string();
    assert!(
        err.starts_with("/srv/shop/stack.yml:6:7: unknown key \"replicaz\" in services.web.deploy"),
        "{err}"
    );
    assert!(err.contains("allowed here: mode, replicas"), "{err}");
    let text = "services:\n  web:\n    image: x\nsecrets:\n  s: {}\n";
    let err = planned(text).unwrap_err().to_string();
    assert!(err.contains("/srv/shop/stack.yml:4:1: secrets"), "{err}");
}

#[test]
fn bad_values_name_the_service() {
    for (text, want) in [
        (
            "services:\n  web:\n    deploy:\n      replicas: 2\n",
            "service web: needs an image",
        ),
        (
            "services:\n  web:\n    image: x\n    networks: [nope]\n",
            "network \"nope\" is not declared",
        ),
        (
            "services:\n  web:\n    image: x\n    ports: [\"70000:80\"]\n",
            "service web:",
        ),
        (
            "services:\n  web:\n    image: x\n    deploy:\n      mode: daemonset\n",
            "deploy.mode",
        ),
        (
            "services:\n  web:\n    image: x\nnetworks:\n  n:\n    driver: bridge\n",
            "driver \"bridge\" is not supported",
        ),
        ("version: \"2\"\nservices: {}\n", "format 3"),
    ] {
        let err = planned(text).unwrap_err().to_string();
        assert!(err.contains(want), "{text}: {err}");
    }
}
