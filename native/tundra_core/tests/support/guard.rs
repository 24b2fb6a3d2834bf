//! Shared by the crates' integration tests: whether tests that create real
//! devices may run here (root, inside a network namespace made for the test
//! run). Anywhere else they say why they did not run; under `CI=true` that
//! is a failure.

pub fn privileged_netns() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let own_netns =
        std::fs::read_link("/proc/self/ns/net").ok() != std::fs::read_link("/proc/1/ns/net").ok();
    if root && own_netns {
        return true;
    }
    let why = if root {
        "not inside a test network namespace (run scripts/test)"
    } else {
        "not root"
    };
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "privileged device tests cannot run under CI: {why}"
    );
    eprintln!("NOTICE: skipping privileged device test: {why}");
    false
}
