//! Entry point of the `recipe` binary: everything lives in the library.
fn main() {
    std::process::exit(recipe::cli::main());
}
