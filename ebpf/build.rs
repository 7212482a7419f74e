//! Compiles the eBPF programs in `src/bpf/` with clang into `$OUT_DIR`, so that the
//! workspace's normal build produces them. `SHOAL_CLANG` names another clang.

use std::path::PathBuf;
use std::process::Command;

const PROGRAMS: &[&str] = &["sock_lb", "mesh"];

fn clang() -> String {
    if let Ok(c) = std::env::var("SHOAL_CLANG") {
        return c;
    }
    for c in ["clang-19", "clang"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c.to_string();
        }
    }
    panic!(
        "building shoal's eBPF programs needs clang (19 is tested) and libbpf's headers: \
         apt-get install clang-19 libbpf-dev (scripts/install-deps.sh does), or set SHOAL_CLANG"
    );
}

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let clang = clang();
    println!("cargo:rerun-if-env-changed=SHOAL_CLANG");
    println!("cargo:rerun-if-changed=src/bpf");
    // Debian keeps asm/types.h under the multiarch directory, which -target bpf does not search.
    let multiarch = format!("/usr/include/{}-linux-gnu", std::env::consts::ARCH);
    for p in PROGRAMS {
        let src = format!("src/bpf/{p}.bpf.c");
        let obj = out.join(format!("{p}.o"));
        let result = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I{multiarch}"))
            .args(["-c", &src, "-o"])
            .arg(&obj)
            .output()
            .unwrap_or_else(|e| panic!("running {clang}: {e}"));
        if !result.status.success() {
            panic!(
                "{clang} could not build {src} (is libbpf-dev installed?):\n{}",
                String::from_utf8_lossy(&result.stderr)
            );
        }
    }
}
