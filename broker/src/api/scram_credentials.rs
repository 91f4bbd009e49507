//! DescribeUserScramCredentials and AlterUserScramCredentials (KIP-554): the SASL/SCRAM users
//! kept in the metadata store. Clients send the salt and the salted password, never the
//! password; the broker keeps the keys derived from them (`skiff_tiering::credentials`).

use super::errors::metadata_error;
use super::Broker;
use crate::security::scram;
use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse,
    DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use skiff_tiering::credentials::{self, CredentialChange, ScramMechanism};
use std::collections::{BTreeMap, HashSet};

pub async fn describe(
    broker: &Broker,
    request: DescribeUserScramCredentialsRequest,
) -> DescribeUserScramCredentialsResponse {
    let users = match credentials::list(&*broker.store).await {
        Ok(users) => users,
        Err(error) => {
            tracing::warn!(%error, "cannot read SCRAM credentials");
            return DescribeUserScramCredentialsResponse::default()
                .with_error_code(metadata_error(&error).code())
                .with_error_message(Some(StrBytes::from_static_str(
                    "credentials cannot be read now",
                )));
        }
    };
    let info = |mechanisms: &Vec<(ScramMechanism, u32)>| {
        mechanisms
            .iter()
            .map(|(m, iterations)| {
                CredentialInfo::default()
                    .with_mechanism(m.kafka_type())
                    .with_iterations(i32::try_from(*iterations).unwrap_or(i32::MAX))
            })
            .collect()
    };
    let results = match request.users {
        // Null or empty: every user.
        None => users
            .iter()
            .map(|(user, mechanisms)| ok_user(user).with_credential_infos(info(mechanisms)))
            .collect(),
        Some(names) if names.is_empty() => users
            .iter()
            .map(|(user, mechanisms)| ok_user(user).with_credential_infos(info(mechanisms)))
            .collect(),
        Some(names) => {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for name in &names {
                *counts.entry(name.name.as_str()).or_default() += 1;
            }
            let mut seen = HashSet::new();
            names
                .iter()
                .filter(|n| seen.insert(n.name.as_str()))
                .map(|n| {
                    let user = n.name.as_str();
                    if counts[user] > 1 {
                        return user_error(
                            user,
                            ResponseError::DuplicateResource,
                            "Cannot describe SCRAM credentials for the same user twice in a single request",
                        );
                    }
                    match users.get(user) {
                        Some(mechanisms) => ok_user(user).with_credential_infos(info(mechanisms)),
                        None => user_error(
                            user,
                            ResponseError::ResourceNotFound,
                            "Attempt to describe a user credential that does not exist",
                        ),
                    }
                })
                .collect()
        }
    };
    DescribeUserScramCredentialsResponse::default().with_results(results)
}

fn ok_user(user: &str) -> DescribeUserScramCredentialsResult {
    DescribeUserScramCredentialsResult::default().with_user(StrBytes::from_string(user.to_owned()))
}

fn user_error(
    user: &str,
    error: ResponseError,
    message: &'static str,
) -> DescribeUserScramCredentialsResult {
    ok_user(user)
        .with_error_code(error.code())
        .with_error_message(Some(StrBytes::from_static_str(message)))
}

/// What one request asks of one user: the user's changes, or why none is made.
#[derive(Default)]
struct UserChanges {
    changes: Vec<CredentialChange>,
    error: Option<(ResponseError, &'static str)>,
    mechanisms: HashSet<ScramMechanism>,
}

impl UserChanges {
    fn refuse(&mut self, error: ResponseError, message: &'static str) {
        self.error.get_or_insert((error, message));
    }

    /// The mechanism, or the refusal (unknown, or named twice for this user).
    fn mechanism(&mut self, kafka_type: i8) -> Option<ScramMechanism> {
        let Some(mechanism) = ScramMechanism::from_kafka_type(kafka_type) else {
            self.refuse(
                ResponseError::UnsupportedSaslMechanism,
                "Unknown SCRAM mechanism",
            );
            return None;
        };
        if !self.mechanisms.insert(mechanism) {
            self.refuse(
                ResponseError::DuplicateResource,
                "A user credential cannot be altered twice in the same request",
            );
            return None;
        }
        Some(mechanism)
    }
}

pub async fn alter(
    broker: &Broker,
    request: AlterUserScramCredentialsRequest,
) -> AlterUserScramCredentialsResponse {
    // Users in the order the request first names them, each with what it asks.
    let mut per_user: Vec<(String, UserChanges)> = Vec::new();
    let index_of = |name: &str, per_user: &mut Vec<(String, UserChanges)>| -> usize {
        match per_user.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                per_user.push((name.to_owned(), UserChanges::default()));
                per_user.len() - 1
            }
        }
    };
    for deletion in &request.deletions {
        let i = index_of(deletion.name.as_str(), &mut per_user);
        let (user, changes) = &mut per_user[i];
        if user.is_empty() {
            changes.refuse(
                ResponseError::UnacceptableCredential,
                "Username must not be empty",
            );
            continue;
        }
        if let Some(mechanism) = changes.mechanism(deletion.mechanism) {
            changes.changes.push(CredentialChange::Delete {
                user: user.clone(),
                mechanism,
            });
        }
    }
    for upsertion in &request.upsertions {
        let i = index_of(upsertion.name.as_str(), &mut per_user);
        let (user, changes) = &mut per_user[i];
        if user.is_empty() {
            changes.refuse(
                ResponseError::UnacceptableCredential,
                "Username must not be empty",
            );
            continue;
        }
        let Some(mechanism) = changes.mechanism(upsertion.mechanism) else {
            continue;
        };
        let iterations = u32::try_from(upsertion.iterations).unwrap_or(0);
        let range = mechanism.iterations_range();
        if iterations < *range.start() {
            changes.refuse(ResponseError::UnacceptableCredential, "Too few iterations");
            continue;
        }
        if iterations > *range.end() {
            changes.refuse(ResponseError::UnacceptableCredential, "Too many iterations");
            continue;
        }
        if upsertion.salt.is_empty() || upsertion.salted_password.is_empty() {
            changes.refuse(
                ResponseError::UnacceptableCredential,
                "Salt and salted password must not be empty",
            );
            continue;
        }
        changes.changes.push(CredentialChange::Upsert {
            user: user.clone(),
            mechanism,
            credential: scram::credential(
                mechanism,
                &upsertion.salted_password,
                &upsertion.salt,
                iterations,
            ),
        });
    }
    let mut results = Vec::with_capacity(per_user.len());
    for (user, changes) in per_user {
        let result = AlterUserScramCredentialsResult::default()
            .with_user(StrBytes::from_string(user.clone()));
        let outcome = match changes.error {
            Some(refused) => Err(refused),
            None => apply_user(broker, &user, &changes.changes).await,
        };
        results.push(match outcome {
            Ok(()) => {
                tracing::info!(user, "SCRAM credentials altered");
                result
            }
            Err((error, message)) => result
                .with_error_code(error.code())
                .with_error_message(Some(StrBytes::from_static_str(message))),
        });
    }
    AlterUserScramCredentialsResponse::default().with_results(results)
}

/// One user's changes: deletions must find what they delete.
async fn apply_user(
    broker: &Broker,
    user: &str,
    changes: &[CredentialChange],
) -> Result<(), (ResponseError, &'static str)> {
    let store_error = |error: &skiff_tiering::metadata::MetadataError| {
        tracing::warn!(%error, user, "cannot alter SCRAM credentials");
        (metadata_error(error), "credentials cannot be written now")
    };
    for change in changes {
        if let CredentialChange::Delete { mechanism, .. } = change {
            let existing = credentials::get(&*broker.store, user, *mechanism)
                .await
                .map_err(|e| store_error(&e))?;
            if existing.is_none() {
                return Err((
                    ResponseError::ResourceNotFound,
                    "Attempt to delete a user credential that does not exist",
                ));
            }
        }
    }
    credentials::apply(&*broker.store, changes)
        .await
        .map_err(|e| store_error(&e))
}
