//! Rebuild when anything under `mappings/` changes: the folder is compiled into the
//! binary as the default mappings, and `include_dir!` alone does not notice new files.
fn main() {
    println!("cargo:rerun-if-changed=mappings");
}
