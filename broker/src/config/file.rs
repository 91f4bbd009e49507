//! The TOML config file: its keys become `SKIFF_*` environment variables that are not already
//! set, so clap applies the precedence flag > environment > file > default.

use super::Cli;
use anyhow::{bail, Context};
use clap::CommandFactory;
use std::path::{Path, PathBuf};

/// Reads the config file named by `--config`/`SKIFF_CONFIG` (if any) and exports its keys as
/// `SKIFF_*` environment variables that are not already set, so clap applies the precedence.
pub fn load_config_file_into_env(args: &[std::ffi::OsString]) -> anyhow::Result<()> {
    // The subcommand decides which keys the file may hold: the first argument that is not a
    // flag.
    let subcommand = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy())
        .find(|a| !a.starts_with('-'))
        .map_or_else(|| "serve".to_owned(), |a| a.into_owned());
    // The admin commands take the file as `--command-config` (as Kafka's tools do), their
    // `--config` being a topic config.
    let flag = if ADMIN_COMMANDS.contains(&subcommand.as_str()) {
        "--command-config"
    } else {
        "--config"
    };
    let mut path = std::env::var_os("SKIFF_CONFIG").map(PathBuf::from);
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let arg = arg.to_string_lossy();
        if arg == flag {
            path = iter.next().map(PathBuf::from);
        } else if let Some(value) = arg.strip_prefix(flag).and_then(|v| v.strip_prefix('=')) {
            path = Some(PathBuf::from(value));
        }
    }
    let Some(path) = path else { return Ok(()) };
    for (name, value) in read_config_file(&path, &subcommand)? {
        // Safe: called from `main` before any other thread exists.
        if std::env::var_os(&name).is_none() {
            std::env::set_var(&name, value);
        }
    }
    Ok(())
}

/// Subcommands that are Kafka clients (`crate::admin`).
const ADMIN_COMMANDS: [&str; 7] = [
    "topic", "group", "cluster", "user", "acl", "produce", "consume",
];

/// The config file as (environment variable, value) pairs; unknown keys are an error.
pub fn read_config_file(path: &Path, subcommand: &str) -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
    let command = Cli::command();
    let Some(found) = command.find_subcommand(subcommand) else {
        bail!("unknown command {subcommand:?}; `skiff --help` lists them");
    };
    let known: Vec<String> = found
        .get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|long| *long != "config" && *long != "command-config")
        .map(str::to_owned)
        .collect();
    let mut out = Vec::new();
    for (key, value) in table {
        let flag = key.replace(['.', '_'], "-");
        if !known.contains(&flag) {
            bail!(
                "unknown key {key:?} in config file {}; known keys: {}",
                path.display(),
                known.join(", ")
            );
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Float(f) => f.to_string(),
            other => bail!("config key {key:?} must be a string, number or boolean, got {other}"),
        };
        out.push((
            format!("SKIFF_{}", flag.replace('-', "_").to_uppercase()),
            value,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_keys_map_to_env_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("skiff.toml");
        std::fs::write(
            &path,
            "\"auto.create.topics.enable\" = false\nflush_linger_ms = 20\nlisteners = \"127.0.0.1:1\"\n",
        )
        .expect("write");
        let mut pairs = read_config_file(&path, "serve").expect("read");
        pairs.sort();
        assert_eq!(
            pairs,
            vec![
                (
                    "SKIFF_AUTO_CREATE_TOPICS_ENABLE".to_owned(),
                    "false".to_owned()
                ),
                ("SKIFF_FLUSH_LINGER_MS".to_owned(), "20".to_owned()),
                ("SKIFF_LISTENERS".to_owned(), "127.0.0.1:1".to_owned()),
            ]
        );
        std::fs::write(&path, "flush_lingr_ms = 20\n").expect("write");
        let error = read_config_file(&path, "serve")
            .expect_err("unknown key")
            .to_string();
        assert!(error.contains("flush_lingr_ms"), "{error}");
    }

    #[test]
    fn every_command_line_definition_is_consistent() {
        // clap checks its definitions only when a command is parsed: check all of them here
        // (conflicting flag names, groups naming unknown arguments).
        Cli::command().debug_assert();
    }

    #[test]
    fn admin_commands_read_the_connection_settings_from_their_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin.toml");
        std::fs::write(&path, "bootstrap-server = \"b1:9092\"\noutput = \"json\"\n")
            .expect("write");
        let mut pairs = read_config_file(&path, "topic").expect("read");
        pairs.sort();
        assert_eq!(
            pairs,
            vec![
                ("SKIFF_BOOTSTRAP_SERVER".to_owned(), "b1:9092".to_owned()),
                ("SKIFF_OUTPUT".to_owned(), "json".to_owned()),
            ]
        );
        std::fs::write(&path, "flush-linger-ms = 20\n").expect("write");
        let error = read_config_file(&path, "group")
            .expect_err("a broker setting is not an admin command's")
            .to_string();
        assert!(error.contains("flush-linger-ms"), "{error}");
    }
}
