//! The `confmesh` command.

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    println!("confmesh {}", env!("CARGO_PKG_VERSION"));
    println!("The agent and command line are not built yet; see README.md for what runs today.");
}
