//! `skiff user set|list|delete`: SASL/SCRAM users, as Kafka's
//! `kafka-configs --entity-type users --alter --add-config 'SCRAM-SHA-512=[password=…]'` manages
//! them (AlterUserScramCredentials, DescribeUserScramCredentials). The password is salted here;
//! only the salt and the salted password go to the broker.
//!
//! `skiff user bootstrap` writes a credential straight into the metadata store, with no broker:
//! the first user of a cluster whose every listener needs a login (Kafka's
//! `kafka-storage format --add-scram`).

use super::client::{describe, Client};
use super::output::{failed, show, Table};
use super::{ClientArgs, Outcome};
use crate::config::{Secret, StoreArgs};
use crate::security::scram;
use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use kafka_protocol::messages::alter_user_scram_credentials_request::{
    ScramCredentialDeletion, ScramCredentialUpsertion,
};
use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;
use skiff_tiering::credentials::{CredentialChange, ScramMechanism};

/// `skiff user …`
#[derive(Debug, Args)]
pub struct UserCommand {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub action: UserAction,
}

/// Which SCRAM credentials a command touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mechanisms {
    #[value(name = "SCRAM-SHA-256")]
    Sha256,
    #[value(name = "SCRAM-SHA-512")]
    Sha512,
    /// Both.
    #[value(name = "all")]
    All,
}

impl Mechanisms {
    fn list(self) -> Vec<ScramMechanism> {
        match self {
            Mechanisms::Sha256 => vec![ScramMechanism::Sha256],
            Mechanisms::Sha512 => vec![ScramMechanism::Sha512],
            Mechanisms::All => ScramMechanism::ALL.to_vec(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Create a user or change their password (a SCRAM credential per mechanism; SASL/PLAIN
    /// logins check passwords against these too).
    Set {
        /// The user name (the principal is `User:<name>`).
        name: String,
        #[command(flatten)]
        credential: NewCredential,
    },
    /// Create a user or change their password directly in the metadata store, without a
    /// broker: the first user (a super user, say) of a cluster whose listeners all need a
    /// login. Takes the metadata store's settings as `skiff serve` does (`--etcd-endpoints`,
    /// `SKIFF_ETCD_*`, or `--data-dir` of a stopped embedded broker).
    Bootstrap {
        /// The user name (the principal is `User:<name>`).
        name: String,
        #[command(flatten)]
        credential: NewCredential,
        #[command(flatten)]
        store: Box<StoreArgs>,
    },
    /// Users and the mechanisms they have credentials for.
    List {
        /// Only these users.
        names: Vec<String>,
    },
    /// Delete a user's credentials.
    Delete {
        name: String,
        /// The credentials to delete.
        #[arg(long, value_enum, default_value = "all")]
        mechanism: Mechanisms,
    },
}

/// A password to store SCRAM credentials for.
#[derive(Debug, Args)]
pub struct NewCredential {
    /// The password; better from the environment, or --password-stdin, than on a command line
    /// others can read.
    #[arg(long, env = "SKIFF_USER_PASSWORD", hide_env_values = true)]
    password: Option<Secret>,
    /// Read the password from the first line of standard input.
    #[arg(long, conflicts_with = "password")]
    password_stdin: bool,
    /// The SCRAM mechanisms to store a credential for.
    #[arg(long, value_enum, default_value = "all")]
    mechanism: Mechanisms,
    /// PBKDF2 iterations (Kafka accepts 4096 to 16384).
    #[arg(long, default_value_t = 8192)]
    iterations: u32,
}

#[derive(Serialize)]
struct UserInfo {
    user: String,
    mechanisms: Vec<Credential>,
}

#[derive(Serialize)]
struct Credential {
    mechanism: &'static str,
    iterations: i32,
}

pub async fn run(command: UserCommand) -> Outcome {
    let args = &command.client;
    match command.action {
        UserAction::Set { name, credential } => {
            let (mechanism, iterations) = (credential.mechanism, credential.iterations);
            let password = read_password(&credential)?;
            let upsertions = mechanism
                .list()
                .into_iter()
                .map(|m| {
                    let salt = scram::random_bytes(32);
                    let salted = scram::salted_password(m, password.as_bytes(), &salt, iterations);
                    ScramCredentialUpsertion::default()
                        .with_name(StrBytes::from_string(name.clone()))
                        .with_mechanism(m.kafka_type())
                        .with_iterations(i32::try_from(iterations).unwrap_or(i32::MAX))
                        .with_salt(salt.into())
                        .with_salted_password(salted.into())
                })
                .collect();
            let request = AlterUserScramCredentialsRequest::default().with_upsertions(upsertions);
            alter(args, request, &name, "set").await
        }
        UserAction::Delete { name, mechanism } => {
            let deletions = mechanism
                .list()
                .into_iter()
                .map(|m| {
                    ScramCredentialDeletion::default()
                        .with_name(StrBytes::from_string(name.clone()))
                        .with_mechanism(m.kafka_type())
                })
                .collect();
            let request = AlterUserScramCredentialsRequest::default().with_deletions(deletions);
            alter(args, request, &name, "deleted").await
        }
        UserAction::Bootstrap {
            name,
            credential,
            store,
        } => {
            let password = read_password(&credential)?;
            bootstrap(
                &store,
                &name,
                &password,
                credential.mechanism,
                credential.iterations,
            )
            .await
        }
        UserAction::List { names } => list(args, names).await,
    }
}

/// The password from the flag or environment, or standard input's first line.
fn read_password(credential: &NewCredential) -> anyhow::Result<String> {
    let password = match (&credential.password, credential.password_stdin) {
        (Some(password), _) => password.expose().to_owned(),
        (None, true) => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("cannot read the password from stdin")?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
        (None, false) => {
            bail!("give the password with --password (or SKIFF_USER_PASSWORD) or --password-stdin")
        }
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}

/// `skiff user bootstrap`: the credentials written in the metadata store directly.
async fn bootstrap(
    store_args: &StoreArgs,
    name: &str,
    password: &str,
    mechanism: Mechanisms,
    iterations: u32,
) -> Outcome {
    if name.is_empty() {
        bail!("the user name is empty");
    }
    let changes: Vec<CredentialChange> = mechanism
        .list()
        .into_iter()
        .map(|m| {
            anyhow::ensure!(
                m.iterations_range().contains(&iterations),
                "{} takes {:?} iterations",
                m.name(),
                m.iterations_range()
            );
            let salt = scram::random_bytes(32);
            let salted = scram::salted_password(m, password.as_bytes(), &salt, iterations);
            Ok(CredentialChange::Upsert {
                user: name.to_owned(),
                mechanism: m,
                credential: scram::credential(m, &salted, &salt, iterations),
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let clock: std::sync::Arc<dyn skiff_tiering::clock::Clock> =
        std::sync::Arc::new(skiff_tiering::clock::SystemClock);
    let (store, _) = crate::storage::open_metadata_store(store_args, clock).await?;
    skiff_tiering::credentials::apply(&*store, &changes)
        .await
        .with_context(|| format!("cannot store the credentials of {name:?}"))?;
    eprintln!("user {name:?} set in the metadata store");
    Ok(true)
}

async fn alter(
    args: &ClientArgs,
    request: AlterUserScramCredentialsRequest,
    name: &str,
    done: &str,
) -> Outcome {
    let mut client = Client::connect(args).await?;
    let response = client.bootstrap().send(&request, 0).await?;
    let mut ok = true;
    for result in &response.results {
        if result.error_code != 0 {
            ok = false;
            failed(
                &format!("user {}", result.user.as_str()),
                &describe(result.error_code, result.error_message.as_ref()),
            );
        }
    }
    if ok {
        eprintln!("user {name:?} {done}");
    }
    Ok(ok)
}

async fn list(args: &ClientArgs, names: Vec<String>) -> Outcome {
    let mut client = Client::connect(args).await?;
    let request =
        DescribeUserScramCredentialsRequest::default().with_users((!names.is_empty()).then(|| {
            names
                .iter()
                .map(|n| UserName::default().with_name(StrBytes::from_string(n.clone())))
                .collect()
        }));
    let response = client.bootstrap().send(&request, 0).await?;
    if response.error_code != 0 {
        bail!(
            "cannot list users: {}",
            describe(response.error_code, response.error_message.as_ref())
        );
    }
    let mut ok = true;
    let mut users = Vec::new();
    for result in &response.results {
        if result.error_code != 0 {
            ok = false;
            failed(
                &format!("user {}", result.user.as_str()),
                &describe(result.error_code, result.error_message.as_ref()),
            );
            continue;
        }
        users.push(UserInfo {
            user: result.user.to_string(),
            mechanisms: result
                .credential_infos
                .iter()
                .map(|c| Credential {
                    mechanism: ScramMechanism::from_kafka_type(c.mechanism)
                        .map_or("UNKNOWN", ScramMechanism::name),
                    iterations: c.iterations,
                })
                .collect(),
        });
    }
    show(args.output, &users, |users| {
        let mut table = Table::new(&["USER", "MECHANISM", "ITERATIONS"]);
        for user in users {
            for credential in &user.mechanisms {
                table.row([
                    user.user.clone(),
                    credential.mechanism.to_owned(),
                    credential.iterations.to_string(),
                ]);
            }
        }
        table.print();
    })?;
    Ok(ok)
}
