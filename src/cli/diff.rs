//! `leakscope diff BASE NEW`: what grew between two saved profiles, ranked
//! in the terminal (sized to its width); with `-o FILE`, also the
//! differential flamegraph as a self-contained HTML (or SVG) file.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use leakscope::agent::profile::Profile;
use leakscope::viewer::analysis::AnalysisError;
use leakscope::viewer::fold::fold_pair;
use leakscope::viewer::render::table::{format_delta, format_value, growth_table};
use leakscope::viewer::render::{FlameOptions, Side, diff_flamegraph};
use leakscope::viewer::{DiffOptions, rank_growth};

/// Settings of `leakscope diff`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Examples:
  leakscope diff base.pb.gz new.pb.gz
  leakscope diff base.pb.gz new.pb.gz --type alloc_space -o diff.html

Profiles are pprof files, gzipped or not: from leakscope, a Go service's
/debug/pprof, or the sidecar's store.")]
pub struct DiffArgs {
    /// The earlier profile.
    pub base: PathBuf,
    /// The later profile.
    pub new: PathBuf,
    /// Sample type to compare (default: the profile's default, such as
    /// inuse_space for heap profiles).
    #[arg(long = "type", value_name = "TYPE")]
    pub sample_type: Option<String>,
    /// Scale the base to the new total before comparing.
    #[arg(long)]
    pub normalize: bool,
    /// Rows of the table.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Also write the differential flamegraph: `.svg` for the flamegraph
    /// alone, anything else for an HTML page with the table and both sides.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

fn read(path: &PathBuf) -> anyhow::Result<Profile> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(Profile::decode_bytes(&bytes, &path.display().to_string())?)
}

/// Width of the terminal on stdout: `COLUMNS`, the tty's, else 100.
fn terminal_width() -> usize {
    if let Some(c) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return c;
    }
    // SAFETY: `ws` is a valid, writable winsize; TIOCGWINSZ only fills it.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col > 0 {
            return usize::from(ws.ws_col);
        }
    }
    100
}

pub fn run(args: DiffArgs) -> anyhow::Result<()> {
    let base = read(&args.base)?;
    let new = read(&args.new)?;
    let (f_base, f_new) =
        fold_pair(&base, &new, args.sample_type.as_deref()).map_err(|e| match e {
            AnalysisError::BaseLacksSampleType { .. } => {
                anyhow::anyhow!("{}: {e}", args.base.display())
            }
            e => anyhow::anyhow!("{}: {e}", args.new.display()),
        })?;
    let growth = rank_growth(
        &base,
        &new,
        &DiffOptions::default()
            .with_sample_type(&f_new.sample_type)
            .with_normalize(args.normalize),
    )?;
    let (bt, nt) = (f_base.total(), f_new.total());
    let unit = f_new.unit.as_str();
    let mut out = std::io::stdout().lock();
    let write = |out: &mut std::io::StdoutLock<'_>, s: &str| -> std::io::Result<()> {
        out.write_all(s.as_bytes())
    };
    let head = format!(
        "{}: {} → {} ({}){}\n\n",
        f_new.sample_type,
        format_value(bt, unit),
        format_value(nt, unit),
        format_delta(nt - bt, unit),
        if args.normalize {
            ", base normalized to the new total"
        } else {
            ""
        }
    );
    let table = if growth.is_empty() {
        "nothing changed\n".to_owned()
    } else {
        growth_table(&growth, unit, terminal_width(), args.top)
    };
    // A closed pipe (`| head`) is not an error.
    let printed = write(&mut out, &head).and_then(|()| write(&mut out, &table));
    if let Err(e) = printed {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
        return Ok(());
    }
    if let Some(path) = &args.output {
        let names = (
            args.base.display().to_string(),
            args.new.display().to_string(),
        );
        let text = if path.extension().is_some_and(|e| e == "svg") {
            let mut o = leakscope::viewer::diff::DiffStacksOptions::default();
            o.normalize = args.normalize;
            let d = leakscope::viewer::diff::diff(&f_base, &f_new, o)?;
            let title = format!("{} → {} ({})", names.0, names.1, d.sample_type);
            diff_flamegraph(&d, &FlameOptions::new(title), Side::New)?
        } else {
            leakscope::viewer::web::diff_report(
                &base,
                &new,
                (&names.0, &names.1),
                Some(&f_new.sample_type),
                args.normalize,
            )
            .map_err(anyhow::Error::msg)?
        };
        if path.as_os_str().is_empty() {
            bail!("-o needs a file name");
        }
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        let _ = writeln!(out, "\nwrote {}", path.display());
    }
    Ok(())
}
