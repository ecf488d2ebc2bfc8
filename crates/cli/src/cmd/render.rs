//! `endstate render` and `endstate validate`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use endstate_core::{Diagnostics, DirTree, Rendered};
use serde_json::json;

use super::EXIT_INVALID;
use crate::cli::{Format, ReportFormat, SourceArgs};

pub fn render(source: &SourceArgs, format: Format) -> anyhow::Result<ExitCode> {
    let rendered = match load(source)? {
        Ok(rendered) => rendered,
        Err(diags) => return Ok(report_invalid(&diags)),
    };
    let mut out = String::new();
    match format {
        Format::Yaml => {
            for (i, o) in rendered.objects.iter().enumerate() {
                if i > 0 {
                    out.push_str("---\n");
                }
                out.push_str(&endstate_core::yaml::to_string(&serde_json::to_value(
                    &o.object,
                )?));
            }
        }
        Format::Json => {
            let items: Vec<_> = rendered.objects.iter().map(|o| &o.object).collect();
            let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
            out = serde_json::to_string_pretty(&list)?;
            out.push('\n');
        }
    }
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = stdout
        .write_all(out.as_bytes())
        .and_then(|_| stdout.flush())
        && err.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(err).context("writing the rendered objects");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn validate(source: &SourceArgs, format: ReportFormat) -> anyhow::Result<ExitCode> {
    let result = load(source)?;
    match (format, result) {
        (ReportFormat::Text, Ok(rendered)) => {
            println!("ok: {}", summary(&rendered));
            Ok(ExitCode::SUCCESS)
        }
        (ReportFormat::Text, Err(diags)) => Ok(report_invalid(&diags)),
        (ReportFormat::Json, result) => {
            let report = match &result {
                Ok(rendered) => json!({
                    "valid": true,
                    "objects": rendered.objects.len(),
                    "kinds": rendered.counts().into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                }),
                Err(diags) => json!({
                    "valid": false,
                    "problems": diags.iter().map(|d| json!({
                        "file": d.file,
                        "line": d.line,
                        "column": d.column,
                        "object": d.object.as_ref().map(|o| o.to_string()),
                        "message": d.message,
                    })).collect::<Vec<_>>(),
                }),
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(match result {
                Ok(_) => ExitCode::SUCCESS,
                Err(_) => ExitCode::from(EXIT_INVALID),
            })
        }
    }
}

/// `N objects (3 Cluster, …)`.
pub fn summary(rendered: &Rendered) -> String {
    let kinds: Vec<String> = rendered
        .counts()
        .into_iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect();
    format!("{} objects ({})", rendered.objects.len(), kinds.join(", "))
}

fn report_invalid(diags: &Diagnostics) -> ExitCode {
    eprint!("{diags}");
    eprintln!(
        "error: the repository is invalid: {} problem{}",
        diags.len(),
        if diags.len() == 1 { "" } else { "s" }
    );
    ExitCode::from(EXIT_INVALID)
}

/// Opens the repository root and renders `dir` inside it.
fn load(source: &SourceArgs) -> anyhow::Result<Result<Rendered, Diagnostics>> {
    let dir = source
        .dir
        .canonicalize()
        .with_context(|| format!("opening {}", source.dir.display()))?;
    if !dir.is_dir() {
        bail!("{} is not a directory", source.dir.display());
    }
    let root = match &source.root {
        Some(root) => root
            .canonicalize()
            .with_context(|| format!("opening the repository root {}", root.display()))?,
        None => default_root(&dir),
    };
    let Ok(relative) = dir.strip_prefix(&root) else {
        bail!(
            "{} is outside the repository root {}",
            dir.display(),
            root.display()
        );
    };
    let relative = relative
        .to_str()
        .with_context(|| format!("{} is not a UTF-8 path", relative.display()))?
        .replace(std::path::MAIN_SEPARATOR, "/");
    let render_at = |root: &Path,
                     relative: &str|
     -> anyhow::Result<Result<Rendered, Diagnostics>> {
        let tree = DirTree::open(root).with_context(|| format!("opening {}", root.display()))?;
        let options = endstate_core::Options {
            limits: endstate_core::yaml::Limits {
                max_file_bytes: source.max_file_bytes,
            },
            owner: None,
        };
        Ok(endstate_core::render(&tree, relative, options))
    };
    let mut result = render_at(&root, &relative)?;
    if let Err(diags) = &mut result
        && source.root.is_none()
        && leaves_the_root(diags)
        && let Some(wider) = wider_root(&dir, &root, render_at)
    {
        diags.push(endstate_core::Diagnostic::file(
            &relative,
            format!(
                "the repository root is {} (no Git work tree encloses {}, and it is not under \
                 the current directory); render with `--root {}` to let it read the files it \
                 references there",
                root.display(),
                dir.display(),
                wider.display()
            ),
        ));
    }
    Ok(result)
}

/// Whether a problem is a path that leads out of the repository root.
fn leaves_the_root(diags: &Diagnostics) -> bool {
    diags
        .iter()
        .any(|d| d.message.contains("leads outside the repository"))
}

/// The nearest ancestor of `root` under which `dir` renders without leaving the root, if one
/// does.
fn wider_root(
    dir: &Path,
    root: &Path,
    render_at: impl Fn(&Path, &str) -> anyhow::Result<Result<Rendered, Diagnostics>>,
) -> Option<PathBuf> {
    root.ancestors().skip(1).find_map(|wider| {
        let relative = dir
            .strip_prefix(wider)
            .ok()?
            .to_str()?
            .replace(std::path::MAIN_SEPARATOR, "/");
        match render_at(wider, &relative).ok()? {
            Ok(_) => Some(wider.to_path_buf()),
            Err(diags) if !leaves_the_root(&diags) => Some(wider.to_path_buf()),
            Err(_) => None,
        }
    })
}

fn default_root(dir: &Path) -> PathBuf {
    if let Some(git) = dir.ancestors().find(|a| a.join(".git").exists()) {
        return git.to_path_buf();
    }
    match std::env::current_dir().and_then(|c| c.canonicalize()) {
        Ok(cwd) if dir.starts_with(&cwd) => cwd,
        _ => dir.to_path_buf(),
    }
}
