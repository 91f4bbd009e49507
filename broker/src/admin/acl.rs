//! `skiff acl create|list|delete`: ACLs, as Kafka's `kafka-acls` manages them (CreateAcls,
//! DescribeAcls, DeleteAcls).

use super::client::{describe, Client};
use super::output::{failed, show, Table};
use super::{ClientArgs, Outcome};
use crate::security::acl::{Operation, PatternType, Permission, ResourceType, ANY, MATCH};
use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;

/// `skiff acl …`
#[derive(Debug, Args)]
pub struct AclCommand {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub action: AclAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PatternArg {
    /// The exact name (`*`: every resource of the type).
    Literal,
    /// Every name starting with the given one.
    Prefixed,
    /// (list, delete) Every pattern that covers the name.
    Match,
    /// (list, delete) Any pattern.
    Any,
}

/// The resource an ACL is on: one of --topic, --group, --transactional-id, --cluster.
#[derive(Debug, Clone, Args)]
pub struct ResourceArgs {
    /// A topic (`*` for every topic).
    #[arg(long, group = "resource")]
    pub topic: Option<String>,
    /// A consumer group.
    #[arg(long, group = "resource")]
    pub group: Option<String>,
    /// A transactional id.
    #[arg(long, group = "resource")]
    pub transactional_id: Option<String>,
    /// The cluster.
    #[arg(long, group = "resource")]
    pub cluster: bool,
    /// How the name matches resources (Kafka's `--resource-pattern-type`).
    #[arg(long, value_enum, default_value = "literal")]
    pub resource_pattern_type: PatternArg,
}

impl ResourceArgs {
    fn resource(&self) -> Option<(ResourceType, String)> {
        if let Some(t) = &self.topic {
            Some((ResourceType::Topic, t.clone()))
        } else if let Some(g) = &self.group {
            Some((ResourceType::Group, g.clone()))
        } else if let Some(t) = &self.transactional_id {
            Some((ResourceType::TransactionalId, t.clone()))
        } else {
            self.cluster.then(|| {
                (
                    ResourceType::Cluster,
                    crate::security::acl::CLUSTER_NAME.into(),
                )
            })
        }
    }

    fn pattern_code(&self) -> i8 {
        match self.resource_pattern_type {
            PatternArg::Literal => PatternType::Literal.code(),
            PatternArg::Prefixed => PatternType::Prefixed.code(),
            PatternArg::Match => MATCH,
            PatternArg::Any => ANY,
        }
    }
}

fn parse_operation(text: &str) -> Result<Operation, String> {
    Operation::from_name(text).ok_or_else(|| format!("unknown operation {text:?} (READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE, CLUSTER_ACTION, ALL)"))
}

#[derive(Debug, Subcommand)]
pub enum AclAction {
    /// Add ACLs: each principal, operation and host on the resource.
    Create {
        #[command(flatten)]
        resource: ResourceArgs,
        /// Principals allowed (`User:alice`, `User:*` for everyone); repeat for more.
        #[arg(long)]
        allow_principal: Vec<String>,
        /// Principals denied (a deny wins over any allow); repeat for more.
        #[arg(long)]
        deny_principal: Vec<String>,
        /// Operations; repeat for more.
        #[arg(long, required = true, value_parser = parse_operation)]
        operation: Vec<Operation>,
        /// The client address the ACL applies to (`*`: any).
        #[arg(long, default_value = "*")]
        host: String,
    },
    /// ACLs matching the filter (all of them without one).
    List {
        #[command(flatten)]
        resource: ResourceArgs,
        /// Only this principal's.
        #[arg(long)]
        principal: Option<String>,
    },
    /// Delete the ACLs matching the filter.
    Delete {
        #[command(flatten)]
        resource: ResourceArgs,
        /// Only this principal's.
        #[arg(long)]
        principal: Option<String>,
        /// Only this operation's.
        #[arg(long, value_parser = parse_operation)]
        operation: Option<Operation>,
    },
}

#[derive(Serialize)]
struct AclRow {
    resource_type: &'static str,
    pattern_type: &'static str,
    name: String,
    principal: String,
    host: String,
    operation: &'static str,
    permission: &'static str,
}

fn print_rows(args: &ClientArgs, rows: &Vec<AclRow>) -> anyhow::Result<()> {
    show(args.output, rows, |rows| {
        let mut table = Table::new(&[
            "RESOURCE",
            "PATTERN",
            "NAME",
            "PRINCIPAL",
            "HOST",
            "OPERATION",
            "PERMISSION",
        ]);
        for r in rows {
            table.row([
                r.resource_type.to_owned(),
                r.pattern_type.to_owned(),
                r.name.clone(),
                r.principal.clone(),
                r.host.clone(),
                r.operation.to_owned(),
                r.permission.to_owned(),
            ]);
        }
        table.print();
    })
}

fn name_of<T: Copy>(
    code: i8,
    from: fn(i8) -> Option<T>,
    name: fn(T) -> &'static str,
) -> &'static str {
    from(code).map_or("UNKNOWN", name)
}

pub async fn run(command: AclCommand) -> Outcome {
    let args = &command.client;
    let mut client = Client::connect(args).await?;
    match command.action {
        AclAction::Create {
            resource,
            allow_principal,
            deny_principal,
            operation,
            host,
        } => {
            let Some((resource_type, name)) = resource.resource() else {
                bail!("name the resource: --topic, --group, --transactional-id or --cluster");
            };
            if !matches!(
                resource.resource_pattern_type,
                PatternArg::Literal | PatternArg::Prefixed
            ) {
                bail!("an ACL's --resource-pattern-type is literal or prefixed");
            }
            if allow_principal.is_empty() && deny_principal.is_empty() {
                bail!("give --allow-principal or --deny-principal");
            }
            let mut creations = Vec::new();
            for (principals, permission) in [
                (&allow_principal, Permission::Allow),
                (&deny_principal, Permission::Deny),
            ] {
                for principal in principals {
                    for op in &operation {
                        creations.push(
                            AclCreation::default()
                                .with_resource_type(resource_type.code())
                                .with_resource_name(StrBytes::from_string(name.clone()))
                                .with_resource_pattern_type(resource.pattern_code())
                                .with_principal(StrBytes::from_string(principal.clone()))
                                .with_host(StrBytes::from_string(host.clone()))
                                .with_operation(op.code())
                                .with_permission_type(permission.code()),
                        );
                    }
                }
            }
            let response = client
                .bootstrap()
                .send(&CreateAclsRequest::default().with_creations(creations), 3)
                .await?;
            let mut ok = true;
            for result in &response.results {
                if result.error_code != 0 {
                    ok = false;
                    failed(
                        "create ACL",
                        &describe(result.error_code, result.error_message.as_ref()),
                    );
                }
            }
            if ok {
                eprintln!("{} ACLs created", response.results.len());
            }
            Ok(ok)
        }
        AclAction::List {
            resource,
            principal,
        } => {
            let (resource_type, name) = resource
                .resource()
                .map_or((ANY, None), |(t, n)| (t.code(), Some(n)));
            let pattern = if name.is_none() {
                ANY
            } else {
                resource.pattern_code()
            };
            let request = DescribeAclsRequest::default()
                .with_resource_type_filter(resource_type)
                .with_resource_name_filter(name.map(StrBytes::from_string))
                .with_pattern_type_filter(pattern)
                .with_principal_filter(principal.map(StrBytes::from_string))
                .with_host_filter(None)
                .with_operation(ANY)
                .with_permission_type(ANY);
            let response = client.bootstrap().send(&request, 3).await?;
            if response.error_code != 0 {
                bail!(
                    "cannot list ACLs: {}",
                    describe(response.error_code, response.error_message.as_ref())
                );
            }
            let mut rows = Vec::new();
            for r in &response.resources {
                for acl in &r.acls {
                    rows.push(AclRow {
                        resource_type: name_of(
                            r.resource_type,
                            ResourceType::from_code,
                            ResourceType::name,
                        ),
                        pattern_type: name_of(
                            r.pattern_type,
                            PatternType::from_code,
                            PatternType::name,
                        ),
                        name: r.resource_name.to_string(),
                        principal: acl.principal.to_string(),
                        host: acl.host.to_string(),
                        operation: name_of(acl.operation, Operation::from_code, Operation::name),
                        permission: name_of(
                            acl.permission_type,
                            Permission::from_code,
                            Permission::name,
                        ),
                    });
                }
            }
            print_rows(args, &rows)?;
            Ok(true)
        }
        AclAction::Delete {
            resource,
            principal,
            operation,
        } => {
            let (resource_type, name) = resource
                .resource()
                .map_or((ANY, None), |(t, n)| (t.code(), Some(n)));
            if name.is_none() && principal.is_none() {
                bail!("name what to delete: a resource (--topic, --group, ...) or --principal");
            }
            let pattern = if name.is_none() {
                ANY
            } else {
                resource.pattern_code()
            };
            let filter = DeleteAclsFilter::default()
                .with_resource_type_filter(resource_type)
                .with_resource_name_filter(name.map(StrBytes::from_string))
                .with_pattern_type_filter(pattern)
                .with_principal_filter(principal.map(StrBytes::from_string))
                .with_host_filter(None)
                .with_operation(operation.map_or(ANY, Operation::code))
                .with_permission_type(ANY);
            let response = client
                .bootstrap()
                .send(&DeleteAclsRequest::default().with_filters(vec![filter]), 3)
                .await?;
            let mut ok = true;
            let mut deleted = 0;
            for result in &response.filter_results {
                if result.error_code != 0 {
                    ok = false;
                    failed(
                        "delete ACLs",
                        &describe(result.error_code, result.error_message.as_ref()),
                    );
                }
                deleted += result.matching_acls.len();
            }
            if ok {
                eprintln!("{deleted} ACLs deleted");
            }
            Ok(ok)
        }
    }
}
