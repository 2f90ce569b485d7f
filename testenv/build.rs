//! Builds `native/nosync.c` into the shared library test brokers are started with (see
//! `kafka::NOSYNC_LIBRARY`), with the C compiler that builds librdkafka for the operator.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let source = "native/nosync.c";
    println!("cargo::rerun-if-changed={source}");
    println!("cargo::rerun-if-env-changed=CC");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("libcgo_nosync.so");
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let status = Command::new(&compiler)
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&out)
        .arg(source)
        .status()
        .unwrap_or_else(|error| panic!("run the C compiler {compiler:?} (set CC to another): {error}"));
    assert!(status.success(), "{compiler} could not build {source}: {status}");
    println!("cargo::rustc-env=CGO_NOSYNC_LIBRARY={}", out.display());
}
