//! Prints the CRDs as YAML: `cargo run -p understudy-crds --bin crdgen > crds/understudy.yaml`.
fn main() {
    print!("{}", understudy_crds::crds_yaml());
}
