// Rebuild the eBPF object when bpf-linker changes (it is an undeclared build dependency).
fn main() {
    match which::which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => panic!(
            "bpf-linker not found: install it with `cargo install bpf-linker@0.10.3 --locked`"
        ),
    }
}
