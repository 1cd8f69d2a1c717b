//! Room: the hidden `privatize generate`, which writes shell completions and
//! one man page per subcommand from the clap definitions. CI diffs the result.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

use crate::cli::{Cli, GenerateArgs};

/// Writes `completions/` and `man/` under `--out-dir`.
pub fn run(args: &GenerateArgs) -> Result<()> {
    let completions = args.out_dir.join("completions");
    let man = args.out_dir.join("man");
    fs::create_dir_all(&completions)
        .with_context(|| format!("creating {}", completions.display()))?;
    fs::create_dir_all(&man).with_context(|| format!("creating {}", man.display()))?;
    for shell in [
        Shell::Bash,
        Shell::Zsh,
        Shell::Fish,
        Shell::Elvish,
        Shell::PowerShell,
    ] {
        clap_complete::generate_to(shell, &mut Cli::command(), "privatize", &completions)
            .with_context(|| {
                format!("writing {shell} completions into {}", completions.display())
            })?;
    }
    let mut command = Cli::command();
    command.build();
    write_page(&man, "privatize", command.clone())?;
    for sub in command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = format!("privatize-{}", sub.get_name());
        let page = sub.clone().name(&name).display_name(&name);
        write_page(&man, &name, page)?;
    }
    Ok(())
}

fn write_page(dir: &Path, name: &str, command: clap::Command) -> Result<()> {
    let path = dir.join(format!("{name}.1"));
    let mut out = Vec::new();
    clap_mangen::Man::new(command)
        .render(&mut out)
        .with_context(|| format!("rendering man page {name}"))?;
    fs::write(&path, out).with_context(|| format!("writing {}", path.display()))
}
