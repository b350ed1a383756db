//! Static checks of a recipe, done before any host is touched: unknown functions, wrong
//! argument counts, unknown option keys, undeclared `vars.x`, fields a primitive's result
//! never has (`let r = sh(..); r.chagned`), and template errors.
//!
//! It walks Rhai's AST (the `internals` feature) of the recipe and of every module it
//! imports. It only reports what is certain to fail when reached, so a recipe that passes
//! is not promised to run, but one that fails here would fail on every host.

use rhai::{ASTNode, Engine, Expr, Position, Stmt, AST};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::errors::Located;
use crate::hints::did_you_mean;

/// Names the engine itself handles, with any number of arguments.
const BUILTINS: &[&str] = &[
    "print",
    "debug",
    "type_of",
    "eval",
    "Fn",
    "call",
    "curry",
    "is_shared",
    "is_def_var",
    "is_def_fn",
    "this",
];

/// Functions registered outside the primitive modules: controller mode adds `play`.
const EXTRA: &[(&str, usize)] = &[("play", 2)];

/// Every function the engine knows: name -> argument counts, and printable signatures.
struct Registered {
    arities: HashMap<String, BTreeSet<usize>>,
    sigs: HashMap<String, Vec<String>>,
    /// Primitive names (the `recipe doc` reference), offered first as suggestions.
    primitives: BTreeSet<String>,
}

fn registered() -> &'static Registered {
    static R: OnceLock<Registered> = OnceLock::new();
    R.get_or_init(|| {
        let engine = crate::engine::build(Path::new("."), None);
        let mut r = Registered {
            arities: HashMap::new(),
            sigs: HashMap::new(),
            primitives: BTreeSet::new(),
        };
        let json: serde_json::Value = engine
            .gen_fn_metadata_to_json(true)
            .ok()
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or_default();
        for f in json["functions"].as_array().into_iter().flatten() {
            let (Some(name), Some(n)) = (f["name"].as_str(), f["numParams"].as_u64()) else {
                continue;
            };
            r.arities
                .entry(name.to_string())
                .or_default()
                .insert(n as usize);
            if let Some(s) = f["signature"].as_str() {
                r.sigs
                    .entry(name.to_string())
                    .or_default()
                    .push(crate::engine::short_type(s));
            }
        }
        for m in crate::engine::api_modules() {
            let json = crate::engine::module_metadata(m);
            for f in json["functions"].as_array().into_iter().flatten() {
                if let Some(name) = f["name"].as_str() {
                    if !name.contains('$') {
                        r.primitives.insert(name.to_string());
                    }
                }
            }
        }
        for (name, n) in EXTRA {
            r.arities.entry(name.to_string()).or_default().insert(*n);
            r.primitives.insert(name.to_string());
        }
        r
    })
}

/// What the walk saw of one call.
struct Call {
    name: String,
    /// `m` in `m::f(..)`.
    ns: Option<String>,
    args: usize,
    method: bool,
    pos: Position,
    /// Keys of a literal map given as the last argument, with their value when it is a literal.
    opts: Option<Vec<Opt>>,
    /// For `play("literal.rhai", #{vars: #{..}})`: the recipe and the keys of `vars`.
    play: Option<(String, Vec<(String, Position)>)>,
    /// For `template(dest, "literal", ..)`: the path and its position.
    template: Option<(String, Position)>,
    /// For `template`: the keys of a literal `vars:` option; `None` when it is not literal.
    template_vars: Option<Vec<String>>,
    /// For `download(..)`: where its sha256 comes from, as far as the source shows.
    download: Option<String>,
    /// For `play(..)`: the played recipe, when it is a literal.
    played: Option<String>,
}

/// A file's functions: name -> argument counts (private ones included).
#[derive(Default, Clone)]
struct FileFns {
    all: HashMap<String, BTreeSet<usize>>,
    public: HashMap<String, BTreeSet<usize>>,
}

fn fns_of(ast: &AST) -> FileFns {
    let mut f = FileFns::default();
    for d in ast.iter_functions() {
        f.all
            .entry(d.name.to_string())
            .or_default()
            .insert(d.params.len());
        if d.access != rhai::FnAccess::Private {
            f.public
                .entry(d.name.to_string())
                .or_default()
                .insert(d.params.len());
        }
    }
    f
}

/// An engine like the run's, but without the optimizer, so the AST is what was written.
fn plain_engine(dir: &Path) -> Engine {
    let mut e = crate::engine::build(dir, None);
    e.set_optimization_level(rhai::OptimizationLevel::None);
    e
}

fn map_keys(e: &Expr) -> Option<Vec<(String, Position)>> {
    match e {
        Expr::Map(x, _) => Some(
            x.0.iter()
                .map(|(id, _)| (id.name.to_string(), id.pos))
                .collect(),
        ),
        Expr::DynamicConstant(d, pos) if d.is_map() => d
            .read_lock::<rhai::Map>()
            .map(|m| m.keys().map(|k| (k.to_string(), *pos)).collect()),
        _ => None,
    }
}

/// One entry of a literal options map.
struct Opt {
    key: String,
    pos: Position,
    /// The value, when the source spells it out (`644`, `"yes"`, `#{A: "1"}`).
    value: Option<(rhai::Dynamic, Position)>,
}

fn opts_of(e: &Expr) -> Option<Vec<Opt>> {
    match e {
        Expr::Map(x, _) => Some(
            x.0.iter()
                .map(|(id, v)| Opt {
                    key: id.name.to_string(),
                    pos: id.pos,
                    value: v.get_literal_value(None).map(|d| (d, v.position())),
                })
                .collect(),
        ),
        Expr::DynamicConstant(d, pos) if d.is_map() => d.read_lock::<rhai::Map>().map(|m| {
            m.iter()
                .map(|(k, v)| Opt {
                    key: k.to_string(),
                    pos: *pos,
                    value: Some((v.clone(), *pos)),
                })
                .collect()
        }),
        _ => None,
    }
}

fn map_entry<'e>(e: &'e Expr, key: &str) -> Option<&'e Expr> {
    match e {
        Expr::Map(x, _) => x.0.iter().find(|(id, _)| id.name == key).map(|(_, v)| v),
        _ => None,
    }
}

fn call_of(x: &rhai::FnCallExpr, pos: Position, method: bool) -> Option<Call> {
    let name = x.name.to_string();
    if x.is_operator_call() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return None;
    }
    let ns = if x.namespace.is_empty() {
        None
    } else {
        Some(x.namespace.root().to_string())
    };
    let last = x.args.last();
    let opts = last.and_then(opts_of);
    let play = match (x.args.first(), x.args.get(1)) {
        (Some(Expr::StringConstant(r, _)), Some(m)) if name == "play" && !method => {
            map_entry(m, "vars")
                .and_then(map_keys)
                .map(|k| (r.to_string(), k))
        }
        _ => None,
    };
    let (mut template, mut template_vars) = (None, Some(Vec::new()));
    if name == "template" && !method && ns.is_none() && x.args.len() >= 2 {
        if let Expr::StringConstant(s, p) = &x.args[1] {
            template = Some((s.to_string(), *p));
        }
        if x.args.len() == 3 {
            template_vars = match &x.args[2] {
                Expr::Map(..) => match map_entry(&x.args[2], "vars") {
                    None => Some(Vec::new()),
                    Some(v) => map_keys(v).map(|k| k.into_iter().map(|(k, _)| k).collect()),
                },
                _ => None,
            };
        }
    }
    let download = (name == "download" && !method && ns.is_none()).then(|| download_pin(x));
    let played = match x.args.first() {
        Some(Expr::StringConstant(r, _)) if name == "play" && !method && ns.is_none() => {
            Some(r.to_string())
        }
        _ => None,
    };
    Some(Call {
        name,
        ns,
        args: x.args.len(),
        method,
        pos,
        opts,
        play,
        template,
        template_vars,
        download,
        played,
    })
}

/// `vars.name` -> `name`.
fn vars_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Dot(x, ..) if is_vars(&x.lhs) => match &x.rhs {
            Expr::Property(p, _) => Some(p.2.to_string()),
            _ => None,
        },
        Expr::Index(x, ..) if is_vars(&x.lhs) => match &x.rhs {
            Expr::StringConstant(s, _) => Some(s.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// Where a `download(..)` call's checksum comes from, as far as its arguments show (a
/// literal, a variable, the pins table); what is computed at run time is said to be unseen.
const UNPINNED_NONE: &str = "UNPINNED: no sha256";

fn download_pin(x: &rhai::FnCallExpr) -> String {
    const NONE: &str = "UNPINNED: no sha256 (refused at run time)";
    let Some(o) = x.args.get(2) else {
        return NONE.into();
    };
    if !matches!(o, Expr::Map(..)) {
        return "cannot see: its options are computed at run time (refused then if they hold no sha256)".into();
    }
    let off = matches!(map_entry(o, "verify"), Some(Expr::BoolConstant(false, _)));
    let unset = if off {
        "UNPINNED: verify: false (one warning line at every run)"
    } else {
        NONE
    };
    // `sha512` in place of `sha256` (download() takes one of them).
    let (a, entry) = match map_entry(o, "sha512") {
        Some(e) if map_entry(o, "sha256").is_none() => ("sha512", Some(e)),
        _ => ("sha256", map_entry(o, "sha256")),
    };
    match entry {
        None => unset.into(),
        Some(Expr::StringConstant(v, _)) if v.trim().is_empty() => unset.into(),
        Some(Expr::StringConstant(v, _)) if v.trim().eq_ignore_ascii_case("unverified") => {
            format!("UNPINNED: {a} \"unverified\" (one warning line at every run)")
        }
        Some(Expr::StringConstant(..)) => format!("pinned (a literal {a})"),
        Some(v) => match vars_name(v) {
            Some(n) => format!(
                "{a} from vars.{n} (the site's value or the recipe's default: \"\" is refused at run time, \"unverified\" warned)"
            ),
            None => match v {
                Expr::FnCall(f, _)
                    if f.name == a
                        && f.namespace.root() == "pins"
                        && f.args.first().and_then(vars_name).is_some() =>
                {
                    format!(
                        "{a} from vars.{}, else from stdlib/pins.rhai's table (refused at run time when neither has one)",
                        f.args.first().and_then(vars_name).unwrap_or_default()
                    )
                }
                _ => format!("cannot see: its {a} is computed at run time (refused then if empty)"),
            },
        },
    }
}

/// Everything one walk over a file collects.
#[derive(Default)]
struct Seen {
    calls: Vec<Call>,
    /// `import "path" as alias`: alias -> path.
    imports: BTreeMap<String, String>,
    /// Variable and parameter names: a call through one may be a function pointer.
    locals: HashSet<String>,
    /// Keys of map literals: `obj.f()` may call a function pointer held in a map.
    map_keys: HashSet<String>,
    /// `vars.x` / `vars["x"]` at the top level: name, position.
    var_uses: Vec<(String, Position)>,
    /// `vars.contains("x")`: names that are tested before use.
    var_tests: HashSet<String>,
    /// Strings handed to the shell as written (`sh`'s command and guards): their escapes
    /// are the shell's.
    shell: HashSet<Position>,
    /// How often each name is bound or assigned (`let`, `for`, parameters, `x = ..`,
    /// `x.f = ..`): only a name bound once holds one known result.
    bindings: HashMap<String, usize>,
    /// `let r = prim(..)`: r -> prim.
    results: HashMap<String, String>,
    /// `r.field` (read): r, field, where.
    field_uses: Vec<(String, String, Position)>,
}

/// Where `sh`/`probe`/`wait_for` take a command: its argument and the guards of its options.
fn shell_strings(x: &rhai::FnCallExpr, out: &mut HashSet<Position>) {
    if !matches!(x.name.as_str(), "sh" | "probe" | "wait_for") {
        return;
    }
    if let Some(cmd) = x.args.first() {
        out.insert(cmd.position());
    }
    for k in ["creates", "removes", "unless", "onlyif"] {
        if let Some(v) = x.args.get(1).and_then(|m| map_entry(m, k)) {
            out.insert(v.position());
        }
    }
}

fn scan(ast: &AST) -> Seen {
    let mut s = Seen::default();
    for f in ast.iter_functions() {
        s.locals.extend(f.params.iter().map(|p| p.to_string()));
        for p in &f.params {
            *s.bindings.entry(p.to_string()).or_default() += 1;
        }
    }
    ast.walk(&mut |path: &[ASTNode]| {
        match path.last() {
            Some(ASTNode::Stmt(Stmt::FnCall(x, pos)))
            | Some(ASTNode::Expr(Expr::FnCall(x, pos))) => {
                shell_strings(x, &mut s.shell);
                s.calls.extend(call_of(x, *pos, false))
            }
            Some(ASTNode::Expr(Expr::MethodCall(x, pos))) => {
                shell_strings(x, &mut s.shell);
                s.calls.extend(call_of(x, *pos, true))
            }
            Some(ASTNode::Stmt(Stmt::Import(x, _))) => {
                if let Expr::StringConstant(p, _) = &x.0 {
                    s.imports.insert(x.1.name.to_string(), p.to_string());
                }
            }
            Some(ASTNode::Stmt(Stmt::Var(x, ..))) => {
                let name = x.0.name.to_string();
                s.locals.insert(name.clone());
                *s.bindings.entry(name.clone()).or_default() += 1;
                if let Expr::FnCall(f, _) = &x.1 {
                    if f.namespace.is_empty() {
                        s.results.insert(name, f.name.to_string());
                    }
                }
            }
            Some(ASTNode::Stmt(Stmt::For(x, _))) => {
                s.locals.insert(x.0.name.to_string());
                *s.bindings.entry(x.0.name.to_string()).or_default() += 1;
                if let Some(i) = &x.1 {
                    s.locals.insert(i.name.to_string());
                    *s.bindings.entry(i.name.to_string()).or_default() += 1;
                }
            }
            Some(ASTNode::Stmt(Stmt::Assignment(x))) => {
                // `r = ..` and `r.f = ..` (a result takes new fields): r is no longer known.
                if let Some((name, _)) = dotted_var(&x.1.lhs) {
                    *s.bindings.entry(name).or_default() += 2;
                }
            }
            Some(ASTNode::Expr(Expr::Dot(x, ..))) => {
                if let (Some((name, _)), Expr::Property(..) | Expr::Dot(..)) =
                    (dotted_var(&x.lhs), &x.rhs)
                {
                    // `r.a.b` nests as Dot(r, Dot(a, b)): the field is the leftmost part.
                    let mut rhs = &x.rhs;
                    while let Expr::Dot(y, ..) = rhs {
                        rhs = &y.lhs;
                    }
                    if let Expr::Property(p, pos) = rhs {
                        s.field_uses.push((name, p.2.to_string(), *pos));
                    }
                }
            }
            Some(ASTNode::Expr(e @ (Expr::Map(..) | Expr::DynamicConstant(..)))) => {
                for (k, _) in map_keys(e).unwrap_or_default() {
                    s.map_keys.insert(k);
                }
            }
            _ => {}
        }
        true
    });
    // `vars` is the recipe's constant only at the top level (functions cannot see it).
    let mut path = Vec::new();
    for stmt in ast.statements() {
        stmt.walk(&mut path, &mut |p: &[ASTNode]| {
            if let Some(ASTNode::Expr(e)) = p.last() {
                var_use(e, &mut s.var_uses, &mut s.var_tests);
            }
            true
        });
        path.clear();
    }
    s
}

/// The variable `r` of `r` or `r.f...` (not a module's), with its position.
fn dotted_var(e: &Expr) -> Option<(String, Position)> {
    match e {
        Expr::Variable(v, _, pos) if v.2.is_empty() => Some((v.1.to_string(), *pos)),
        Expr::Dot(x, ..) | Expr::Index(x, ..) => dotted_var(&x.lhs),
        _ => None,
    }
}

fn is_vars(e: &Expr) -> bool {
    matches!(e, Expr::Variable(v, ..) if v.1 == "vars" && v.2.is_empty())
}

fn var_use(e: &Expr, uses: &mut Vec<(String, Position)>, tests: &mut HashSet<String>) {
    let (x, index) = match e {
        Expr::Dot(x, ..) => (x, false),
        Expr::Index(x, ..) => (x, true),
        _ => return,
    };
    if !is_vars(&x.lhs) {
        return;
    }
    // `vars.a.b` nests as Dot(vars, Dot(a, b)): the name is the leftmost part.
    let mut rhs = &x.rhs;
    while let Expr::Dot(y, ..) | Expr::Index(y, ..) = rhs {
        rhs = &y.lhs;
    }
    match rhs {
        Expr::Property(p, pos) if !index => uses.push((p.2.to_string(), *pos)),
        Expr::StringConstant(s, pos) if index => uses.push((s.to_string(), *pos)),
        Expr::MethodCall(m, _) if m.name == "contains" => {
            if let Some(Expr::StringConstant(s, _)) = m.args.first() {
                tests.insert(s.to_string());
            }
        }
        _ => {}
    }
}

fn located(msg: String, source: &Path, pos: Position) -> Located {
    Located {
        message: msg,
        source: Some(source.display().to_string()),
        line: pos.line().unwrap_or(0),
        column: pos.position().unwrap_or(0),
        ..Default::default()
    }
}

/// What the check found: errors (the recipe cannot run) and warnings (it runs, likely not as
/// meant).
#[derive(Default)]
pub struct Findings {
    pub errors: Vec<Located>,
    pub warnings: Vec<Located>,
    /// Every `download(..)` of the recipe and its modules, with where its sha256 comes from.
    pub downloads: Vec<Located>,
}

/// Checks a recipe (compiled by `load`) and the modules it imports; returns every finding.
pub fn check(recipe: &Path, text: &str, declared: &[String]) -> Findings {
    let dir = recipe
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let engine = plain_engine(&dir);
    let mut scope = rhai::Scope::new();
    scope.push_constant("vars", crate::engine::Vars::default());
    let Ok(ast) = engine.compile_with_scope(&scope, text) else {
        return Findings::default(); // `load` reports syntax errors itself
    };
    let mut c = Checker {
        engine,
        recipe_dir: dir,
        declared: declared.to_vec(),
        out: Vec::new(),
        warnings: Vec::new(),
        downloads: Vec::new(),
        plays: Vec::new(),
        visited: HashSet::new(),
        modules: HashMap::new(),
        played: HashMap::new(),
    };
    c.file(recipe, &ast, true);
    if let Some((_, f, pos)) = c.plays.first() {
        let names: Vec<&str> = c.plays.iter().map(|(n, _, _)| n.as_str()).collect();
        c.downloads.push(located(
            format!(
                "play: cannot see the downloads of the recipes it plays ({}): `recipe check` on each lists them",
                names.join(", ")
            ),
            f,
            *pos,
        ));
    }
    Findings {
        errors: c.out,
        warnings: c.warnings,
        downloads: c.downloads,
    }
}

struct Checker {
    engine: Engine,
    recipe_dir: PathBuf,
    declared: Vec<String>,
    out: Vec<Located>,
    warnings: Vec<Located>,
    downloads: Vec<Located>,
    /// Recipes played (name, where first): their downloads are not seen here.
    plays: Vec<(String, PathBuf, Position)>,
    visited: HashSet<PathBuf>,
    /// Module file -> its functions (`None`: not found or not compiled).
    modules: HashMap<PathBuf, Option<FileFns>>,
    /// Played recipe -> the variables it declares (`None`: it does not load).
    played: HashMap<PathBuf, Option<Vec<String>>>,
}

impl Checker {
    /// Where `import "name"` from `from` finds its file, as the engine's resolvers would.
    fn module_file(&self, from: &Path, name: &str) -> Option<PathBuf> {
        let mut dirs: Vec<PathBuf> = from.parent().map(Path::to_path_buf).into_iter().collect();
        dirs.extend(crate::modules::module_paths(&self.recipe_dir));
        dirs.into_iter()
            .flat_map(|d| [d.join(format!("{name}.rhai")), d.join(name)])
            .find(|p| p.is_file())
    }

    fn module(&mut self, file: &Path) -> Option<FileFns> {
        if let Some(m) = self.modules.get(file) {
            return m.clone();
        }
        let ast = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| self.engine.compile(&t).ok());
        let fns = ast.as_ref().map(fns_of);
        self.modules.insert(file.to_path_buf(), fns.clone());
        if let Some(ast) = ast {
            self.file(file, &ast, false);
        }
        fns
    }

    fn file(&mut self, file: &Path, ast: &AST, is_recipe: bool) {
        if !self.visited.insert(file.to_path_buf()) {
            return;
        }
        let own = fns_of(ast);
        let seen = scan(ast);
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for b in backticks(&text) {
            let at = Position::new(b.line as u16, b.col as u16);
            if !seen.shell.contains(&at) {
                self.warnings.extend(escape_warning(file, &b));
            }
        }
        let mut mods: HashMap<String, Option<FileFns>> = HashMap::new();
        for (alias, name) in &seen.imports {
            let fns = self.module_file(file, name).and_then(|p| self.module(&p));
            mods.insert(alias.clone(), fns);
        }
        for call in &seen.calls {
            self.call(file, call, &own, &seen, &mods);
            if let Some(d) = &call.download {
                if d.starts_with(UNPINNED_NONE) {
                    // Certain to be refused when reached: said now, before any host.
                    self.out.push(located(
                        "download without a sha256 is refused (the file would be installed unverified): \
                         give #{sha256: ...} (a recipe variable, e.g. vars.x_sha256, lets the site set it), \
                         or verify: false to take it unchecked with a warning at every run"
                            .into(),
                        file,
                        call.pos,
                    ));
                }
                self.downloads
                    .push(located(format!("download: {d}"), file, call.pos));
            }
            if call.name == "play" && !call.method && call.ns.is_none() {
                let r = call.played.clone().unwrap_or_else(|| "(computed)".into());
                if !self.plays.iter().any(|(p, _, _)| *p == r) {
                    self.plays.push((r, file.to_path_buf(), call.pos));
                }
            }
        }
        self.result_fields(file, &own, &seen);
        if is_recipe {
            for (name, pos) in &seen.var_uses {
                if self.declared.contains(name) || seen.var_tests.contains(name) {
                    continue;
                }
                let hint = did_you_mean(name, self.declared.iter().map(String::as_str))
                    .map(|n| format!(" (did you mean `{n}`?)"))
                    .unwrap_or_default();
                self.out.push(located(
                    format!(
                        "unknown variable `vars.{name}`{hint}; declare it in fn defaults() (declared: {})",
                        list_or_none(&self.declared)
                    ),
                    file,
                    *pos,
                ));
            }
        }
    }

    /// `let r = sh(..); if r.chagned`: a field the primitive's result never has, where the
    /// variable is bound once to that call (anything else is left to the run, which refuses
    /// a missing field too).
    fn result_fields(&mut self, file: &Path, own: &FileFns, seen: &Seen) {
        for (var, field, pos) in &seen.field_uses {
            if seen.bindings.get(var) != Some(&1) {
                continue;
            }
            let Some(call) = seen.results.get(var) else {
                continue;
            };
            if own.all.contains_key(call) {
                continue;
            }
            let Some(fields) = crate::primitives::fields::result_fields(call) else {
                continue;
            };
            if fields.contains(&field.as_str()) {
                continue;
            }
            let hint = did_you_mean(field, fields.iter().copied())
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            self.out.push(located(
                format!(
                    "`{var}` holds the result of `{call}`, which has no field `{field}`{hint}; it has: {}",
                    fields.join(", ")
                ),
                file,
                *pos,
            ));
        }
    }

    fn call(
        &mut self,
        file: &Path,
        c: &Call,
        own: &FileFns,
        seen: &Seen,
        mods: &HashMap<String, Option<FileFns>>,
    ) {
        if let Some(ns) = &c.ns {
            // Only modules this file imports and that were found can be checked.
            let Some(Some(m)) = mods.get(ns) else { return };
            match m.public.get(&c.name) {
                None => {
                    let hint = did_you_mean(&c.name, m.public.keys().map(String::as_str))
                        .map(|n| format!(" (did you mean `{ns}::{n}`?)"))
                        .unwrap_or_default();
                    self.out.push(located(
                        format!(
                            "module `{ns}` has no function `{}`{hint}; it has: {}",
                            c.name,
                            sorted_names(m.public.keys())
                        ),
                        file,
                        c.pos,
                    ));
                }
                Some(n) if !n.contains(&c.args) => self.out.push(located(
                    format!(
                        "`{ns}::{}` takes {} argument(s), not {}",
                        c.name,
                        counts(n),
                        c.args
                    ),
                    file,
                    c.pos,
                )),
                Some(_) => {}
            }
            return;
        }
        if BUILTINS.contains(&c.name.as_str()) {
            return;
        }
        if c.method && seen.map_keys.contains(&c.name) {
            return; // may call a function pointer stored in a map
        }
        if !c.method && seen.locals.contains(&c.name) {
            return; // may call a function pointer held in a variable
        }
        let reg = registered();
        let mut ok_counts: BTreeSet<usize> = BTreeSet::new();
        // A method call passes the object as the first argument of a registered function,
        // but as `this` (not a parameter) to a script function.
        let reg_args = c.args + usize::from(c.method);
        if let Some(n) = reg.arities.get(&c.name) {
            ok_counts.extend(n.iter().map(|k| k - usize::from(c.method).min(*k)));
        }
        if let Some(n) = own.all.get(&c.name) {
            ok_counts.extend(n.iter().copied());
        }
        let known = reg.arities.contains_key(&c.name) || own.all.contains_key(&c.name);
        if !known {
            let prims = reg.primitives.iter().map(String::as_str);
            let script = own.all.keys().map(String::as_str);
            let others = reg
                .arities
                .keys()
                .map(String::as_str)
                .filter(|n| !n.contains('$'));
            let hint = did_you_mean(&c.name, prims.chain(script))
                .or_else(|| did_you_mean(&c.name, others))
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            let what = if c.method { "method" } else { "function" };
            self.out.push(located(
                format!(
                    "unknown {what} `{}`{hint}; `recipe doc` lists the primitives",
                    c.name
                ),
                file,
                c.pos,
            ));
            return;
        }
        let fits = reg
            .arities
            .get(&c.name)
            .is_some_and(|n| n.contains(&reg_args))
            || own.all.get(&c.name).is_some_and(|n| n.contains(&c.args));
        if !fits {
            let sigs = reg
                .sigs
                .get(&c.name)
                .map(|s| {
                    let mut s = s.clone();
                    s.sort();
                    s.dedup();
                    s.truncate(4);
                    format!(": {}", s.join("; "))
                })
                .unwrap_or_default();
            self.out.push(located(
                format!(
                    "`{}` takes {} argument(s), not {}{sigs}",
                    c.name,
                    counts(&ok_counts),
                    c.args
                ),
                file,
                c.pos,
            ));
            return;
        }
        if !own.all.contains_key(&c.name) {
            if let (Some(given), Some(fields)) = (&c.opts, crate::primitives::options::of(&c.name))
            {
                self.options(file, &c.name, given, &fields);
            }
            if let Some((played, keys)) = &c.play {
                self.play_vars(file, played, keys);
            }
            if let Some((src, pos)) = &c.template {
                self.template(file, src, *pos, c.template_vars.as_deref());
            }
        }
    }

    /// A literal options map: every key known, every literal value of the right type (the
    /// same checks a run makes at the call).
    fn options(
        &mut self,
        file: &Path,
        what: &str,
        given: &[Opt],
        fields: &[crate::primitives::options::Field],
    ) {
        use crate::primitives::options::{check_value, unknown_option};
        for o in given {
            let Some(f) = fields.iter().find(|f| f.key == o.key) else {
                self.out
                    .push(located(unknown_option(what, &o.key, fields), file, o.pos));
                continue;
            };
            if let Some((v, pos)) = &o.value {
                if let Err(e) = check_value(what, f, v) {
                    self.out.push(located(e, file, *pos));
                }
            }
        }
    }

    /// `play("x.rhai", #{vars: #{..}})`: the played recipe must declare each variable.
    fn play_vars(&mut self, file: &Path, played: &str, keys: &[(String, Position)]) {
        let beside = self.recipe_dir.join(played);
        let path = if beside.is_file() {
            Some(beside)
        } else {
            crate::recipe::resolve(played).ok()
        };
        let Some(path) = path else { return };
        let declared = match self.played.get(&path) {
            Some(d) => d.clone(),
            None => {
                let d = crate::recipe::declared(&self.engine, &path);
                self.played.insert(path.clone(), d.clone());
                d
            }
        };
        let Some(declared) = declared else { return };
        for (k, pos) in keys {
            if declared.contains(k) {
                continue;
            }
            let hint = did_you_mean(k, declared.iter().map(String::as_str))
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            self.out.push(located(
                format!(
                    "play {played}: it declares no variable `{k}`{hint} (declared: {})",
                    list_or_none(&declared)
                ),
                file,
                *pos,
            ));
        }
    }

    /// A template named by a literal path: it must exist, parse, and use only known names.
    fn template(&mut self, file: &Path, src: &str, pos: Position, extra: Option<&[String]>) {
        let path = self.recipe_dir.join(src);
        let here = format!(
            "named at {}:{}:{}",
            file.display(),
            pos.line().unwrap_or(0),
            pos.position().unwrap_or(0)
        );
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                self.out.push(located(
                    format!(
                        "cannot read template {} ({e}); templates are found relative to the recipe's folder",
                        path.display()
                    ),
                    file,
                    pos,
                ));
                return;
            }
        };
        let env = template_env();
        let shown = path.display().to_string();
        let tmpl = match env.template_from_named_str(&shown, &text) {
            Ok(t) => t,
            Err(e) => {
                let (line, column) = template_place(&e, &text);
                let mut msg = format!("template {}", e.kind());
                if let Some(d) = e.detail() {
                    msg.push_str(": ");
                    msg.push_str(d);
                }
                self.out.push(Located {
                    message: msg,
                    source: Some(shown),
                    line,
                    column,
                    notes: vec![here],
                    ..Default::default()
                });
                return;
            }
        };
        let Some(extra) = extra else { return };
        let mut unknown: Vec<String> = tmpl
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| {
                !self.declared.contains(v)
                    && !extra.contains(v)
                    && env.globals().all(|(g, _)| g != v.as_str())
                    && !guarded(&text, v)
            })
            .collect();
        unknown.sort();
        let known: Vec<String> = self.declared.iter().chain(extra).cloned().collect();
        for v in unknown {
            let (line, column) = first_use(&text, &v);
            let hint = did_you_mean(&v, known.iter().map(String::as_str))
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            self.out.push(Located {
                message: format!(
                    "template uses undefined variable `{v}`{hint}; declare it in fn defaults() or pass it with #{{vars: #{{{v}: ...}}}}"
                ),
                source: Some(shown.clone()),
                line,
                column,
                notes: vec![here.clone()],
                ..Default::default()
            });
        }
    }
}

/// The environment templates are rendered in (the same syntax as `template()` uses).
fn template_env<'s>() -> minijinja::Environment<'s> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    let mut syntax = minijinja::syntax::SyntaxConfig::builder();
    syntax.keep_trailing_newline(true).trim_blocks(true);
    if let Ok(sc) = syntax.build() {
        env.set_syntax(sc);
    }
    env
}

/// Line and column of a template error (column from its byte range, when there is one).
fn template_place(e: &minijinja::Error, text: &str) -> (usize, usize) {
    let line = e.line().unwrap_or(0);
    let col = match e.range() {
        Some(r) if r.start <= text.len() && text.is_char_boundary(r.start) => {
            let start = text[..r.start].rfind('\n').map(|i| i + 1).unwrap_or(0);
            text[start..r.start].chars().count() + 1
        }
        _ => 0,
    };
    (line, col)
}

/// `x is defined`, `x is not defined`, `x | default(..)`: the template copes with its absence.
fn guarded(text: &str, v: &str) -> bool {
    let squeezed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    [
        format!("{v} is defined"),
        format!("{v} is not defined"),
        format!("{v} is undefined"),
        format!("{v}|default"),
        format!("{v} | default"),
        format!("{v}|d("),
    ]
    .iter()
    .any(|p| squeezed.contains(p.as_str()))
}

/// Where a name first appears inside a `{{ }}` or `{% %}` tag: (line, column), 1-based.
fn first_use(text: &str, name: &str) -> (usize, usize) {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut in_tag = false;
    for (n, line) in text.lines().enumerate() {
        let chars: Vec<(usize, char)> = line.char_indices().collect();
        for (k, &(i, ch)) in chars.iter().enumerate() {
            let next = chars.get(k + 1).map(|x| x.1);
            if ch == '{' && matches!(next, Some('{') | Some('%')) {
                in_tag = true;
            } else if matches!(ch, '}' | '%') && next == Some('}') {
                in_tag = false;
            }
            if in_tag
                && line[i..].starts_with(name)
                && !line[..i].ends_with(is_ident)
                && !line[i + name.len()..].starts_with(is_ident)
            {
                return (n + 1, k + 1);
            }
        }
    }
    (0, 0)
}

/// Backslash escapes Rhai keeps as written inside a backtick string (`\n` stays a backslash
/// and an `n`): in a backtick string they are almost always meant as in a "..." string.
const KEPT_ESCAPES: &[char] = &['n', 't', 'r', '"'];

/// A backtick string: where it starts, and the escapes it holds (line, column, the escape).
#[derive(Debug, PartialEq, Eq)]
struct Backtick {
    line: usize,
    col: usize,
    escapes: Vec<(usize, usize, char)>,
}

/// An escape while reading: where, which, and whether inside shell single quotes.
type EscapeSeen = (usize, usize, char, bool);

/// Finds the backtick strings of Rhai source and the escapes each holds outside shell
/// single quotes (`printf '%s\n'` hands the backslash to the shell, as meant). Comments,
/// "..." strings and 'c' characters are skipped; `${...}` is code again, nesting.
fn backticks(text: &str) -> Vec<Backtick> {
    #[derive(Clone, Copy, PartialEq)]
    enum St {
        Code,
        /// Inside a backtick string.
        Tick,
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out: Vec<Backtick> = Vec::new();
    // Open backtick strings (index into `out`) and, for each `${`, the brace depth it opened at.
    let mut stack: Vec<(St, usize)> = vec![(St::Code, 0)];
    // Per open string: its index in `out`, the escapes seen, inside shell single quotes.
    let mut open: Vec<(usize, Vec<EscapeSeen>, bool)> = Vec::new();
    let mut depth = 0usize;
    let (mut line, mut col) = (1usize, 1usize);
    let mut i = 0;
    let step = |i: &mut usize, line: &mut usize, col: &mut usize, n: usize| {
        for k in 0..n {
            if chars.get(*i + k) == Some(&'\n') {
                *line += 1;
                *col = 1;
            } else {
                *col += 1;
            }
        }
        *i += n;
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let st = stack.last().map(|s| s.0).unwrap_or(St::Code);
        match st {
            St::Code => match c {
                '/' if next == Some('/') => {
                    while i < chars.len() && chars[i] != '\n' {
                        step(&mut i, &mut line, &mut col, 1);
                    }
                }
                '/' if next == Some('*') => {
                    let mut nest = 0;
                    while i < chars.len() {
                        if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                            nest += 1;
                            step(&mut i, &mut line, &mut col, 2);
                        } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                            nest -= 1;
                            step(&mut i, &mut line, &mut col, 2);
                            if nest == 0 {
                                break;
                            }
                        } else {
                            step(&mut i, &mut line, &mut col, 1);
                        }
                    }
                }
                '"' | '\'' => {
                    step(&mut i, &mut line, &mut col, 1);
                    while i < chars.len() && chars[i] != c {
                        let n = if chars[i] == '\\' { 2 } else { 1 };
                        step(&mut i, &mut line, &mut col, n);
                    }
                    step(&mut i, &mut line, &mut col, 1);
                }
                '`' => {
                    out.push(Backtick {
                        line,
                        col,
                        escapes: Vec::new(),
                    });
                    open.push((out.len() - 1, Vec::new(), false));
                    stack.push((St::Tick, depth));
                    step(&mut i, &mut line, &mut col, 1);
                }
                '{' => {
                    depth += 1;
                    step(&mut i, &mut line, &mut col, 1);
                }
                '}' => {
                    // The `}` closing a `${`: back into its backtick string.
                    if stack.len() > 1 && stack.last().is_some_and(|s| s.1 == depth) {
                        stack.pop();
                    } else {
                        depth = depth.saturating_sub(1);
                    }
                    step(&mut i, &mut line, &mut col, 1);
                }
                _ => step(&mut i, &mut line, &mut col, 1),
            },
            St::Tick => match c {
                '`' if next == Some('`') => step(&mut i, &mut line, &mut col, 2),
                '`' => {
                    stack.pop();
                    // Quotes that do not pair up (an apostrophe in prose) quote nothing.
                    if let Some((k, seen, unpaired)) = open.pop() {
                        out[k].escapes = seen
                            .into_iter()
                            .filter(|e| unpaired || !e.3)
                            .map(|(l, c, e, _)| (l, c, e))
                            .collect();
                    }
                    step(&mut i, &mut line, &mut col, 1);
                }
                '$' if next == Some('{') => {
                    stack.push((St::Code, depth));
                    step(&mut i, &mut line, &mut col, 2);
                }
                '\'' => {
                    if let Some(o) = open.last_mut() {
                        o.2 = !o.2;
                    }
                    step(&mut i, &mut line, &mut col, 1);
                }
                '\\' => {
                    if let (Some(e), Some(o)) = (next, open.last_mut()) {
                        if KEPT_ESCAPES.contains(&e) {
                            o.1.push((line, col, e, o.2));
                        }
                    }
                    let n = if next.is_some_and(|e| e != '`') { 2 } else { 1 };
                    step(&mut i, &mut line, &mut col, n);
                }
                _ => step(&mut i, &mut line, &mut col, 1),
            },
        }
    }
    out
}

/// The warning for a backtick string holding escapes Rhai keeps as written.
fn escape_warning(source: &Path, b: &Backtick) -> Option<Located> {
    let &(line, column, e) = b.escapes.first()?;
    let (meant, fix) = match e {
        'n' => ("a line break", "`...` + \"\\n\" instead, or a real line break inside the backticks"),
        't' => ("a tab", "`...` + \"\\t\" instead, or a real tab inside the backticks"),
        'r' => ("a carriage return", "`...` + \"\\r\" instead, or a \"...\" string"),
        _ => ("a double quote", "a plain \" instead (backticks need no backslash before it), or a \"...\" string with \\\""),
    };
    let more = match b.escapes.len() {
        1 => String::new(),
        n => format!("; {n} such escapes in this string"),
    };
    Some(Located {
        message: format!(
            "this backtick string holds `\\{e}`, which stays a backslash followed by `{e}`, not {meant} (backtick strings process no escapes{more}); write {fix}"
        ),
        source: Some(source.display().to_string()),
        line,
        column,
        ..Default::default()
    })
}

fn counts(n: &BTreeSet<usize>) -> String {
    let v: Vec<String> = n.iter().map(|k| k.to_string()).collect();
    match v.len() {
        0 => "no".into(),
        1 => v[0].clone(),
        _ => format!("{} or {}", v[..v.len() - 1].join(", "), v[v.len() - 1]),
    }
}

fn sorted_names<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let mut v: Vec<&str> = it.map(String::as_str).collect();
    v.sort();
    v.join(", ")
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backtick_escapes_are_found_outside_shell_quotes() {
        let esc = |t: &str| -> Vec<Vec<(usize, usize, char)>> {
            backticks(t).into_iter().map(|b| b.escapes).collect()
        };
        assert_eq!(esc("let a = `${x} y\\n`;"), vec![vec![(1, 16, 'n')]]);
        // Shell single quotes keep theirs; an unpaired quote (an apostrophe) quotes nothing.
        assert_eq!(esc("sh(`printf '%s\\n' ${x}`);"), vec![vec![]]);
        assert_eq!(esc("log(`it's done\\n`);"), vec![vec![(1, 15, 'n')]]);
        // "..." strings, comments and code inside ${...} are not backtick strings.
        assert_eq!(esc("let a = \"\\n`\"; // `\\n`\n"), Vec::<Vec<_>>::new());
        assert_eq!(
            esc("let a = `${ #{k: `in\\t`}.k } \\\"`;"),
            vec![vec![(1, 30, '"')], vec![(1, 21, 't')]]
        );
        // Lines and columns count characters.
        assert_eq!(esc("// é\nlet é = `\\t`;"), vec![vec![(2, 10, 't')]]);
    }

    #[test]
    fn template_names_are_found_in_tags_only() {
        let t = "name = x\n{% if x %}{{ name }}{% endif %}\n";
        assert_eq!(first_use(t, "name"), (2, 14));
        assert!(guarded("{% if a is  defined %}", "a"));
        assert!(!guarded("{{ a }}", "a"));
    }
}
