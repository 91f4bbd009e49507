//! Skiff patch: what etcd-client's `build.rs` did on every build, run once by hand instead.
//!
//! Same configuration as the release's build script (client only; the `build-server` feature
//! is not supported by the vendored copy), writing into a temporary directory and copying the
//! files `src/rpc/pb.rs` includes into `src/rpc/generated/`. Needs `protoc` (or `PROTOC`).

use std::path::Path;

const PROTOS: &[&str] = &[
    "proto/etcd/api/authpb/auth.proto",
    "proto/etcd/api/etcdserverpb/rpc.proto",
    "proto/etcd/api/mvccpb/kv.proto",
    "proto/etcd/server/etcdserver/api/v3election/v3electionpb/v3election.proto",
    "proto/etcd/server/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
];

/// The packages `src/rpc/pb.rs` includes; prost also emits google.api and openapiv2 modules
/// for imported annotations, which the crate never used.
const PACKAGES: &[&str] = &["authpb", "etcdserverpb", "mvccpb", "v3electionpb", "v3lockpb"];

fn main() {
    let crate_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::set_current_dir(&crate_root).expect("etcd-client crate root exists");
    let out = std::env::temp_dir().join(format!("etcd-client-codegen-{}", std::process::id()));
    std::fs::create_dir_all(&out).expect("create temporary output directory");

    tonic_prost_build::configure()
        .build_server(false)
        .out_dir(&out)
        .compile_protos(PROTOS, &["proto"])
        .expect("Failed to compile proto files");

    let dest = Path::new("src/rpc/generated");
    std::fs::create_dir_all(dest).expect("create src/rpc/generated");
    for package in PACKAGES {
        let file = format!("{package}.rs");
        std::fs::copy(out.join(&file), dest.join(&file)).expect("copy generated file");
        println!("wrote {}", dest.join(&file).display());
    }
    std::fs::remove_dir_all(&out).expect("remove temporary output directory");
}
