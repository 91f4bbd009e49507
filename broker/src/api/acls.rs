//! CreateAcls, DescribeAcls and DeleteAcls: the ACLs of the standard authorizer
//! (`crate::security::authorizer`), kept in the metadata store. Changing them takes ALTER on
//! the cluster, reading them DESCRIBE; without an authorizer they answer SECURITY_DISABLED.

use super::authz::Guard;
use super::errors::metadata_error;
use super::Broker;
use crate::security::acl::{AclBinding, AclFilter, Operation};
use crate::security::Session;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;

fn text(message: impl Into<String>) -> Option<StrBytes> {
    Some(StrBytes::from_string(message.into()))
}

/// Why the request as a whole is refused: no authorizer, or not allowed `operation` on the
/// cluster (logged and counted as every refusal a client hears of: [`Guard`]).
fn refused(
    broker: &Broker,
    session: &Session,
    api: ApiKey,
    operation: Operation,
) -> Option<ResponseError> {
    if !broker.authorizer.enabled() {
        return Some(ResponseError::SecurityDisabled);
    }
    let allowed = Guard::new(broker, session, api).cluster(operation);
    (!allowed).then_some(ResponseError::ClusterAuthorizationFailed)
}

pub async fn create(
    broker: &Broker,
    session: &Session,
    request: CreateAclsRequest,
) -> CreateAclsResponse {
    let count = request.creations.len();
    if let Some(error) = refused(broker, session, ApiKey::CreateAcls, Operation::Alter) {
        let result = AclCreationResult::default().with_error_code(error.code());
        return CreateAclsResponse::default().with_results(vec![result; count]);
    }
    let mut results = vec![AclCreationResult::default(); count];
    let mut valid = Vec::new();
    for (i, c) in request.creations.iter().enumerate() {
        match AclBinding::from_wire(
            c.resource_type,
            c.resource_name.as_str(),
            c.resource_pattern_type,
            c.principal.as_str(),
            c.host.as_str(),
            c.operation,
            c.permission_type,
        ) {
            Ok(binding) => valid.push((i, binding)),
            Err(error) => {
                results[i] = AclCreationResult::default()
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(text(error.to_string()));
            }
        }
    }
    let bindings: Vec<AclBinding> = valid.iter().map(|(_, b)| b.clone()).collect();
    if let Err(error) = broker.authorizer.create(&bindings).await {
        tracing::warn!(%error, "cannot create ACLs");
        for (i, _) in &valid {
            results[*i] = AclCreationResult::default()
                .with_error_code(metadata_error(&error).code())
                .with_error_message(text("ACLs cannot be written now"));
        }
    } else {
        for (_, binding) in &valid {
            tracing::info!(acl = ?binding, by = %session.principal().map(|p| p.to_string()).unwrap_or_default(), "ACL created");
        }
    }
    CreateAclsResponse::default().with_results(results)
}

pub async fn describe(
    broker: &Broker,
    session: &Session,
    request: DescribeAclsRequest,
) -> DescribeAclsResponse {
    if let Some(error) = refused(broker, session, ApiKey::DescribeAcls, Operation::Describe) {
        return DescribeAclsResponse::default().with_error_code(error.code());
    }
    let Some(filter) = AclFilter::from_wire(
        request.resource_type_filter,
        request.resource_name_filter.as_deref(),
        request.pattern_type_filter,
        request.principal_filter.as_deref(),
        request.host_filter.as_deref(),
        request.operation,
        request.permission_type,
    ) else {
        return DescribeAclsResponse::default()
            .with_error_code(ResponseError::InvalidRequest.code())
            .with_error_message(text(
                "unknown resource, pattern, operation or permission type",
            ));
    };
    if let Err(error) = broker.authorizer.reload().await {
        tracing::warn!(%error, "cannot read ACLs; describing the last ones read");
    }
    let current = broker.authorizer.current();
    let mut resources: BTreeMap<_, Vec<AclDescription>> = BTreeMap::new();
    for binding in current.bindings().filter(|b| filter.matches(b)) {
        resources.entry(binding.pattern.clone()).or_default().push(
            AclDescription::default()
                .with_principal(StrBytes::from_string(binding.entry.principal.clone()))
                .with_host(StrBytes::from_string(binding.entry.host.clone()))
                .with_operation(binding.entry.operation.code())
                .with_permission_type(binding.entry.permission.code()),
        );
    }
    DescribeAclsResponse::default().with_resources(
        resources
            .into_iter()
            .map(|(pattern, acls)| {
                DescribeAclsResource::default()
                    .with_resource_type(pattern.resource_type.code())
                    .with_resource_name(StrBytes::from_string(pattern.name))
                    .with_pattern_type(pattern.pattern_type.code())
                    .with_acls(acls)
            })
            .collect(),
    )
}

pub async fn delete(
    broker: &Broker,
    session: &Session,
    request: DeleteAclsRequest,
) -> DeleteAclsResponse {
    if let Some(error) = refused(broker, session, ApiKey::DeleteAcls, Operation::Alter) {
        let result = DeleteAclsFilterResult::default().with_error_code(error.code());
        return DeleteAclsResponse::default()
            .with_filter_results(vec![result; request.filters.len()]);
    }
    let mut results = Vec::with_capacity(request.filters.len());
    for f in &request.filters {
        let Some(filter) = AclFilter::from_wire(
            f.resource_type_filter,
            f.resource_name_filter.as_deref(),
            f.pattern_type_filter,
            f.principal_filter.as_deref(),
            f.host_filter.as_deref(),
            f.operation,
            f.permission_type,
        ) else {
            results.push(
                DeleteAclsFilterResult::default()
                    .with_error_code(ResponseError::InvalidRequest.code())
                    .with_error_message(text(
                        "unknown resource, pattern, operation or permission type",
                    )),
            );
            continue;
        };
        match broker.authorizer.delete(|b| filter.matches(b)).await {
            Ok(removed) => {
                for binding in &removed {
                    tracing::info!(acl = ?binding, by = %session.principal().map(|p| p.to_string()).unwrap_or_default(), "ACL deleted");
                }
                results.push(
                    DeleteAclsFilterResult::default().with_matching_acls(
                        removed
                            .into_iter()
                            .map(|b| {
                                DeleteAclsMatchingAcl::default()
                                    .with_resource_type(b.pattern.resource_type.code())
                                    .with_resource_name(StrBytes::from_string(b.pattern.name))
                                    .with_pattern_type(b.pattern.pattern_type.code())
                                    .with_principal(StrBytes::from_string(b.entry.principal))
                                    .with_host(StrBytes::from_string(b.entry.host))
                                    .with_operation(b.entry.operation.code())
                                    .with_permission_type(b.entry.permission.code())
                            })
                            .collect(),
                    ),
                );
            }
            Err(error) => {
                tracing::warn!(%error, "cannot delete ACLs");
                results.push(
                    DeleteAclsFilterResult::default()
                        .with_error_code(metadata_error(&error).code())
                        .with_error_message(text("ACLs cannot be written now")),
                );
            }
        }
    }
    DeleteAclsResponse::default().with_filter_results(results)
}
