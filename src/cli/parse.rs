//! Parsing the command line where clap alone gets it wrong: it counts an
//! environment value as typed, so flags that exclude each other are settled here.

use std::ffi::OsString;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use super::{Cli, Command, SyncImageArgs};

impl Cli {
    /// Parses the process's arguments, exiting with a usage error (status 2) on bad input.
    pub fn parse_args() -> Self {
        Self::try_parse_args(std::env::args_os()).unwrap_or_else(|err| err.exit())
    }

    /// Parses `args`. Flags that exclude each other are settled here rather than by
    /// clap, which counts an environment value as typed: a flag on the command line
    /// wins over the environment value of a flag it excludes.
    pub fn try_parse_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut command = Self::command();
        let matches = command.try_get_matches_from_mut(args)?;
        let mut cli = Self::from_arg_matches(&matches).map_err(|err| err.format(&mut command))?;
        if let (Command::SyncImage(args), Some(("sync-image", sub))) =
            (&mut cli.command, matches.subcommand())
        {
            if let Err((kind, message)) = args.settle_target(sub) {
                let sync = command
                    .find_subcommand_mut("sync-image")
                    .expect("sync-image is a subcommand");
                return Err(sync.error(kind, message));
            }
        }
        Ok(cli)
    }
}

impl SyncImageArgs {
    /// One target: `--to` or `--target`. A typed `--target` sets aside `--to` from
    /// `ECR_REGISTRY` (the Deployment and its copy Jobs export it); both typed is an error.
    fn settle_target(&mut self, matches: &ArgMatches) -> Result<(), (ErrorKind, &'static str)> {
        let to_typed = matches.value_source("to") == Some(ValueSource::CommandLine);
        match (&self.to, &self.target) {
            (Some(_), Some(_)) if to_typed => Err((
                ErrorKind::ArgumentConflict,
                "the argument '--target <TARGET>' cannot be used with '--to <TO>'",
            )),
            (Some(_), Some(_)) => {
                self.to = None;
                Ok(())
            }
            (None, None) => Err((
                ErrorKind::MissingRequiredArgument,
                "give the target with --to REGISTRY[/PREFIX] (or ECR_REGISTRY) or --target REF",
            )),
            _ => Ok(()),
        }
    }
}
