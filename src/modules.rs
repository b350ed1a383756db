//! Where `import "name"` finds a recipe's modules.

use std::path::{Path, PathBuf};

/// Where `import "name"` looks: the recipe's folder, the `stdlib/` beside it or beside
/// its parent (recipes/samples/x.rhai finds the project's stdlib), `./stdlib`, and
/// `$RECIPE_STDLIB`.
pub fn module_paths(recipe_dir: &Path) -> Vec<PathBuf> {
    // A recipe named without a folder (`recipe run r.rhai`) is in the current one: `""`
    // would be no folder at all, and none of its modules would be found.
    let recipe_dir = if recipe_dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        recipe_dir
    };
    let mut v = vec![
        recipe_dir.to_path_buf(),
        recipe_dir.join("../stdlib"),
        recipe_dir.join("../../stdlib"),
        PathBuf::from("stdlib"),
    ];
    if let Some(p) = std::env::var_os("RECIPE_STDLIB") {
        v.insert(0, PathBuf::from(p));
    }
    v.into_iter().filter(|p| p.is_dir()).collect()
}
