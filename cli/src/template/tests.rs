use super::*;

fn service_row(id: &str, name: &str, mode: &str, replicas: &str, ports: &str) -> Value {
    row([
        ("ID", Value::from(id)),
        ("Name", Value::from(name)),
        ("Mode", Value::from(mode)),
        ("Replicas", Value::from(replicas)),
        ("Image", Value::from("nginx:alpine")),
        ("Ports", Value::from(ports)),
    ])
}

const SERVICE_HEADERS: &[(&str, &str)] = &[
    ("ID", "ID"),
    ("Name", "NAME"),
    ("Mode", "MODE"),
    ("Replicas", "REPLICAS"),
    ("Image", "IMAGE"),
    ("Ports", "PORTS"),
];

fn rows() -> Vec<Value> {
    vec![
        service_row(
            "0zmvwuiu3vue",
            "web",
            "replicated",
            "10/10",
            "*:8080->80/tcp",
        ),
        service_row("fm6uf97exkul", "top", "global", "5/5", ""),
    ]
}

fn list(format: &str, rows: &[Value]) -> String {
    Template::list(format)
        .unwrap()
        .render_rows(SERVICE_HEADERS, rows)
        .unwrap()
}

#[test]
fn docker_doc_service_ls_template() {
    // docs/reference/commandline/service_ls.md
    assert_eq!(
        list("{{.ID}}: {{.Mode}} {{.Replicas}}", &rows()),
        "0zmvwuiu3vue: replicated 10/10\nfm6uf97exkul: global 5/5\n"
    );
}

#[test]
fn json_directive_sorts_keys_and_escapes_like_go() {
    let want = r#"{"ID":"0zmvwuiu3vue","Image":"nginx:alpine","Mode":"replicated","Name":"web","Ports":"*:8080-\u003e80/tcp","Replicas":"10/10"}"#;
    assert_eq!(list("json", &rows()[..1]), format!("{want}\n"));
    assert_eq!(list("{{json .}}", &rows()[..1]), format!("{want}\n"));
    assert_eq!(list("{{json .Name}}", &rows()[..1]), "\"web\"\n");
}

#[test]
fn table_prints_headers_and_aligns_like_tabwriter() {
    let want = "\
NAME      IMAGE
web       nginx:alpine
top       nginx:alpine
";
    assert_eq!(list("table {{.Name}}\t{{.Image}}", &rows()), want);
    // The escaped spelling a shell passes through single quotes.
    assert_eq!(list("table {{.Name}}\\t{{.Image}}", &rows()), want);
    // Header functions leave the titles alone; the rows still get them.
    assert_eq!(
        list("table {{lower .Name}}\t{{upper .Mode}}", &rows()),
        "NAME      MODE\nweb       REPLICATED\ntop       GLOBAL\n"
    );
}

#[test]
fn blanks_around_a_list_template_are_trimmed() {
    assert_eq!(list("  {{.Name}}  ", &rows()), "web\ntop\n");
}

#[test]
fn docker_functions() {
    let one = &rows()[..1];
    let cases: &[(&str, &str)] = &[
        ("{{join (split .Replicas \"/\") \" of \"}}", "10 of 10"),
        ("{{title .Mode}}", "Replicated"),
        ("{{title \"hello wide_world-x\"}}", "Hello Wide_world-X"),
        ("{{upper .Name}}{{lower \"AB\"}}", "WEBab"),
        ("{{truncate .ID 4}}", "0zmv"),
        ("{{truncate .ID 40}}", "0zmvwuiu3vue"),
        ("[{{pad .Name 2 1}}]", "[  web ]"),
        ("[{{pad \"\" 2 1}}]", "[]"),
        ("{{println .Name}}", "web\n"),
        ("{{len .Name}}", "3"),
        ("{{if eq .Mode \"replicated\"}}R{{else}}G{{end}}", "R"),
        ("{{printf \"%s-%s\" .Name .Mode}}", "web-replicated"),
        ("{{range split .Replicas \"/\"}}<{{.}}>{{end}}", "<10><10>"),
        ("{{index (split .Ports \":\") 0}}", "*"),
    ];
    for (format, want) in cases {
        assert_eq!(list(format, one), format!("{want}\n"), "{format}");
    }
}

#[test]
fn label_method_and_labels_column() {
    let mut labels = BTreeMap::new();
    labels.insert("usage".to_string(), "prod".to_string());
    labels.insert("team".to_string(), "web, ops".to_string());
    let net = row([
        ("Name", Value::from("backend")),
        ("Labels", Value::from(labels_text(&labels))),
        (LABELS_KEY, labels_value(&labels)),
    ]);
    let headers = &[("Name", "NAME"), ("Labels", "LABELS")];
    let render = |f: &str| {
        Template::list(f)
            .unwrap()
            .render_rows(headers, std::slice::from_ref(&net))
            .unwrap()
    };
    assert_eq!(render("{{.Label \"usage\"}}"), "prod\n");
    assert_eq!(
        render("{{ .Label `team` }}|{{.Label \"none\"}}|"),
        "web, ops||\n"
    );
    assert_eq!(render("{{.Labels}}"), "team=web, ops,usage=prod\n");
    // A string that merely mentions .Label is left alone.
    assert_eq!(render("{{print \".Label \\\"x\\\"\"}}"), ".Label \"x\"\n");
    // The hidden map stays out of the row's JSON.
    assert_eq!(
        render("{{json .}}"),
        "{\"Labels\":\"team=web, ops,usage=prod\",\"Name\":\"backend\"}\n"
    );
    assert_eq!(
        render("table {{.Name}}\t{{.Label \"usage\"}}"),
        "NAME\nbackend   prod\n"
    );
}

#[test]
fn template_errors_read_like_docker() {
    let err = Template::list("{{.Name").err().unwrap();
    assert!(
        err.to_string().starts_with("template parsing error: "),
        "{err}"
    );
    let err = Template::list("{{nosuchfunc .Name}}").err().unwrap();
    assert!(
        err.to_string().starts_with("template parsing error: "),
        "{err}"
    );
    let err = Template::list("{{.Nope}}")
        .unwrap()
        .render_rows(SERVICE_HEADERS, &rows())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "template parsing error: can't evaluate field Nope"
    );
    let err = Template::list("{{truncate .Name \"x\"}}")
        .unwrap()
        .render_rows(SERVICE_HEADERS, &rows())
        .unwrap_err();
    assert!(err.to_string().contains("truncate"), "{err}");
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct Svc {
    #[serde(rename = "ID")]
    id: String,
    spec: serde_json::Value,
    endpoint: serde_json::Value,
}

fn svc(name: &str) -> Svc {
    Svc {
        id: format!("{name}-id"),
        spec: serde_json::json!({
            "Name": name,
            "Labels": {"com.docker.stack.namespace": "shop"},
            "TaskTemplate": {"ContainerSpec": {"Image": "nginx", "Args": ["a", "b"]}},
        }),
        endpoint: serde_json::json!({
            "VirtualIPs": [
                {"NetworkID": "n1", "Addr": "10.0.0.2/24"},
                {"NetworkID": "n2", "Addr": "10.0.1.2/24"}
            ]
        }),
    }
}

#[test]
fn inspect_templates_from_docker_docs() {
    let objs = [svc("web"), svc("db")];
    let cases: &[(&str, &str)] = &[
        ("{{.Spec.Name}}", "web\ndb\n"),
        (
            "{{json .Spec.TaskTemplate}}",
            "{\"ContainerSpec\":{\"Args\":[\"a\",\"b\"],\"Image\":\"nginx\"}}\n{\"ContainerSpec\":{\"Args\":[\"a\",\"b\"],\"Image\":\"nginx\"}}\n",
        ),
        (
            "{{range .Endpoint.VirtualIPs}}{{.Addr}} {{end}}",
            "10.0.0.2/24 10.0.1.2/24 \n10.0.0.2/24 10.0.1.2/24 \n",
        ),
        (
            "{{index .Spec.Labels \"com.docker.stack.namespace\"}}",
            "shop\nshop\n",
        ),
        (
            "{{join .Spec.TaskTemplate.ContainerSpec.Args \",\"}}",
            "a,b\na,b\n",
        ),
        // A key the object lacks prints Go's <no value>, as Docker's raw fallback does.
        ("{{.Spec.Mode}}", "<no value>\n<no value>\n"),
        ("{{len .Endpoint.VirtualIPs}}", "2\n2\n"),
    ];
    for (format, want) in cases {
        assert_eq!(render_inspect(format, &objs).unwrap(), *want, "{format}");
    }
    // Inspect formats are taken as given: no table, no trimming.
    assert_eq!(render_inspect(" {{.ID}}", &objs[..1]).unwrap(), " web-id\n");
    let err = render_inspect("{{.Spec.Name", &objs).unwrap_err();
    assert!(err.to_string().starts_with("template parsing error: "));
}

#[test]
fn list_format_choices() {
    assert!(matches!(ListFormat::parse(None), Ok(ListFormat::Default)));
    assert!(matches!(
        ListFormat::parse(Some("")),
        Ok(ListFormat::Default)
    ));
    assert!(matches!(
        ListFormat::parse(Some("table")),
        Ok(ListFormat::Default)
    ));
    assert!(matches!(
        ListFormat::parse(Some("json")),
        Ok(ListFormat::Template(_))
    ));
    assert!(ListFormat::parse(Some("{{")).is_err());
}
