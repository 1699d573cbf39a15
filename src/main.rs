//! The `confmesh` command.

fn main() {
    println!("confmesh {}", env!("CARGO_PKG_VERSION"));
    println!("The agent and command line are not built yet; see README.md for what runs today.");
}
