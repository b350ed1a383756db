//! `template`: a Jinja template on the controller (minijinja, undefined names are errors)
//! rendered with the host's variables and written like `file` content.

use rhai::plugin::*;

use super::files::*;
use super::*;
use std::sync::Arc;

crate::primitives::options::options! {
    /// Options of `template`.
    pub struct TemplateOpts for "template" {
        /// Variables besides the recipe's: taken out of the map before it is read.
        #[serde(skip)]
        vars: Option<rhai::Map>,
        secret: bool,
        ..attrs: Attrs
    }
}

/// Renders a Jinja template (minijinja, undefined variables are errors).
pub fn render(name: &str, text: &str, ctx: &serde_json::Value) -> Result<String, String> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // Configuration files are not HTML: `x.yaml.j2` or `x.json.j2` must not be escaped.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    let mut syntax = minijinja::syntax::SyntaxConfig::builder();
    syntax.keep_trailing_newline(true).trim_blocks(true);
    if let Ok(sc) = syntax.build() {
        env.set_syntax(sc);
    }
    let err = |e: minijinja::Error| template_error_in(&e, Some(text));
    env.add_template(name, text).map_err(err)?;
    let t = env.get_template(name).map_err(err)?;
    t.render(minijinja::value::Serde(ctx)).map_err(err)
}

/// A template error with its line, and the column when the template text is at hand.
pub fn template_error_in(e: &minijinja::Error, text: Option<&str>) -> String {
    let col = match (e.range(), text) {
        (Some(r), Some(t)) if r.start <= t.len() => {
            let line_start = t[..r.start].rfind('\n').map(|i| i + 1).unwrap_or(0);
            Some(t[line_start..r.start].chars().count() + 1)
        }
        _ => None,
    };
    let place = match (e.name(), e.line(), col) {
        (Some(n), Some(l), Some(c)) => format!("{n}:{l}:{c}: "),
        (Some(n), Some(l), None) => format!("{n}:{l}: "),
        (Some(n), None, _) => format!("{n}: "),
        _ => String::new(),
    };
    let mut msg = format!("{place}{}", e.kind());
    if let Some(d) = e.detail() {
        msg.push_str(": ");
        msg.push_str(d);
    }
    if let Some(dbg) = e
        .display_debug_info()
        .to_string()
        .lines()
        .find(|l| l.contains('>'))
    {
        msg.push('\n');
        msg.push_str(dbg.trim_end());
    }
    msg
}

pub(crate) fn do_template(
    ctx: &NativeCallContext,
    dest: &str,
    src: &str,
    mut m: rhai::Map,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let extra = m.remove("vars");
    let mut o: TemplateOpts = super::opts(ctx, m)?;
    if let Some(e) = extra {
        super::opt_value::<TemplateOpts>(ctx, "vars", &e)?;
        o.vars = e.try_cast::<rhai::Map>();
    }
    super::step(ctx, "template", dest, |h| {
        let (path, bytes) = controller_file(h, src)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
        let mut vars = h.vars.clone();
        vars.extend(o.vars.clone().unwrap_or_default());
        let (json, has_secret) = crate::secret_ops::template_json(vars)?;
        let rendered = render(src, &text, &json)?;
        ensure_content(
            h,
            dest,
            &Payload {
                bytes: Arc::new(rendered.into_bytes()),
                secret: o.secret || has_secret,
            },
            &o.attrs,
        )
    })
}
