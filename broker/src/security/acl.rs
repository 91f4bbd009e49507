//! Kafka's authorization model, as a pure core: ACL bindings (a resource pattern and an entry),
//! the filters of DescribeAcls and DeleteAcls, and the decision of Kafka's standard authorizer.
//!
//! A request by `principal` from `host` to do `operation` on a resource is allowed when the
//! principal is a super user; otherwise denied if any DENY entry matches (the principal or
//! `User:*`, the host or `*`, the operation or ALL) on any pattern matching the resource (the
//! literal name, the literal `*`, any prefix of the name); otherwise allowed if an ALLOW entry
//! matches (READ, WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies
//! DESCRIBE_CONFIGS); otherwise, when no ACL at all names the resource,
//! `--allow-everyone-if-no-acl-found` decides.

use std::collections::BTreeMap;

/// Defines an enum with Kafka's wire codes and names.
macro_rules! kafka_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $code:literal, $text:literal;)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($variant,)* }

        impl $name {
            pub const ALL_VALUES: &'static [$name] = &[$($name::$variant,)*];

            pub fn code(self) -> i8 {
                match self { $($name::$variant => $code,)* }
            }

            pub fn from_code(code: i8) -> Option<$name> {
                match code { $($code => Some($name::$variant),)* _ => None }
            }

            /// Kafka's name (`TOPIC`, `DESCRIBE_CONFIGS`).
            pub fn name(self) -> &'static str {
                match self { $($name::$variant => $text,)* }
            }

            pub fn from_name(text: &str) -> Option<$name> {
                let text = text.trim().replace('-', "_");
                $name::ALL_VALUES.iter().copied().find(|v| v.name().eq_ignore_ascii_case(&text))
            }
        }
    };
}

kafka_enum!(
    /// Kafka's resource types (ANY = 1 only in filters).
    ResourceType {
        Topic = 2, "TOPIC";
        Group = 3, "GROUP";
        Cluster = 4, "CLUSTER";
        TransactionalId = 5, "TRANSACTIONAL_ID";
        DelegationToken = 6, "DELEGATION_TOKEN";
        User = 7, "USER";
    }
);

kafka_enum!(
    /// How a pattern names resources.
    PatternType {
        Literal = 3, "LITERAL";
        Prefixed = 4, "PREFIXED";
    }
);

kafka_enum!(
    /// Kafka's ACL operations.
    Operation {
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
        CreateTokens = 13, "CREATE_TOKENS";
        DescribeTokens = 14, "DESCRIBE_TOKENS";
    }
);

kafka_enum!(
    Permission {
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
);

/// Kafka's codes for "any" in filters, and the MATCH pattern filter.
pub const ANY: i8 = 1;
pub const MATCH: i8 = 2;

/// The cluster resource's one name.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// A literal pattern naming every resource of its type; an entry for every principal or host.
pub const WILDCARD: &str = "*";
pub const ANY_PRINCIPAL: &str = "User:*";

/// What ACLs apply to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourcePattern {
    pub resource_type: ResourceType,
    pub pattern_type: PatternType,
    pub name: String,
}

impl ResourcePattern {
    /// Whether this pattern covers the resource `name` of its type.
    fn covers(&self, name: &str) -> bool {
        match self.pattern_type {
            PatternType::Literal => self.name == name || self.name == WILDCARD,
            PatternType::Prefixed => name.starts_with(&self.name),
        }
    }
}

/// Who may or may not do what from where.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclEntry {
    /// `User:alice`, or `User:*`.
    pub principal: String,
    /// A client IP address, or `*`.
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// One ACL.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclBinding {
    pub pattern: ResourcePattern,
    pub entry: AclEntry,
}

/// Why an ACL cannot be created, in Kafka's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidAcl {
    #[error("unknown or unsupported {0}")]
    Unknown(&'static str),
    #[error("the principal must look like User:NAME")]
    Principal,
    #[error("the resource name must not be empty")]
    EmptyName,
    #[error("the cluster resource is named kafka-cluster and is LITERAL")]
    ClusterName,
}

impl AclBinding {
    /// An ACL from CreateAcls' fields, checked as Kafka checks them.
    pub fn from_wire(
        resource_type: i8,
        name: &str,
        pattern_type: i8,
        principal: &str,
        host: &str,
        operation: i8,
        permission: i8,
    ) -> Result<AclBinding, InvalidAcl> {
        let resource_type =
            ResourceType::from_code(resource_type).ok_or(InvalidAcl::Unknown("resource type"))?;
        let pattern_type =
            PatternType::from_code(pattern_type).ok_or(InvalidAcl::Unknown("pattern type"))?;
        let operation = Operation::from_code(operation).ok_or(InvalidAcl::Unknown("operation"))?;
        let permission =
            Permission::from_code(permission).ok_or(InvalidAcl::Unknown("permission type"))?;
        match principal.split_once(':') {
            Some((kind, who)) if !kind.is_empty() && !who.is_empty() => {}
            _ => return Err(InvalidAcl::Principal),
        }
        if name.is_empty() {
            return Err(InvalidAcl::EmptyName);
        }
        if resource_type == ResourceType::Cluster
            && (name != CLUSTER_NAME || pattern_type != PatternType::Literal)
        {
            return Err(InvalidAcl::ClusterName);
        }
        Ok(AclBinding {
            pattern: ResourcePattern {
                resource_type,
                pattern_type,
                name: name.to_owned(),
            },
            entry: AclEntry {
                principal: principal.to_owned(),
                host: if host.is_empty() { WILDCARD } else { host }.to_owned(),
                operation,
                permission,
            },
        })
    }
}

/// A filter of DescribeAcls or DeleteAcls (`None`: any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: Option<ResourceType>,
    pub name: Option<String>,
    /// `None` any pattern; MATCH every pattern that covers `name`.
    pub pattern: PatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternFilter {
    Any,
    Match,
    Exactly(PatternType),
}

impl AclFilter {
    /// A filter from the wire's fields; `None` when a code is unknown (Kafka answers
    /// INVALID_REQUEST).
    #[allow(clippy::too_many_arguments)]
    pub fn from_wire(
        resource_type: i8,
        name: Option<&str>,
        pattern_type: i8,
        principal: Option<&str>,
        host: Option<&str>,
        operation: i8,
        permission: i8,
    ) -> Option<AclFilter> {
        Some(AclFilter {
            resource_type: any_or(resource_type, ResourceType::from_code)?,
            name: name.map(str::to_owned),
            pattern: match pattern_type {
                ANY => PatternFilter::Any,
                MATCH => PatternFilter::Match,
                code => PatternFilter::Exactly(PatternType::from_code(code)?),
            },
            principal: principal.map(str::to_owned),
            host: host.map(str::to_owned),
            operation: any_or(operation, Operation::from_code)?,
            permission: any_or(permission, Permission::from_code)?,
        })
    }

    pub fn matches(&self, acl: &AclBinding) -> bool {
        let pattern = &acl.pattern;
        let entry = &acl.entry;
        if self
            .resource_type
            .is_some_and(|t| t != pattern.resource_type)
        {
            return false;
        }
        let name_ok = match (&self.pattern, &self.name) {
            (PatternFilter::Match, Some(name)) => pattern.covers(name),
            (PatternFilter::Match, None) => true,
            (PatternFilter::Any, name) => name.as_ref().is_none_or(|n| *n == pattern.name),
            (PatternFilter::Exactly(t), name) => {
                *t == pattern.pattern_type && name.as_ref().is_none_or(|n| *n == pattern.name)
            }
        };
        name_ok
            && self
                .principal
                .as_ref()
                .is_none_or(|p| *p == entry.principal)
            && self.host.as_ref().is_none_or(|h| *h == entry.host)
            && self.operation.is_none_or(|o| o == entry.operation)
            && self.permission.is_none_or(|p| p == entry.permission)
    }
}

/// `code`, or any (`None`) for Kafka's ANY; `None` for an unknown code.
fn any_or<T>(code: i8, parse: fn(i8) -> Option<T>) -> Option<Option<T>> {
    if code == ANY {
        Some(None)
    } else {
        parse(code).map(Some)
    }
}

/// Every ACL, by resource pattern (what the metadata store holds, loaded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclSet {
    pub by_pattern: BTreeMap<ResourcePattern, Vec<AclEntry>>,
}

impl AclSet {
    pub fn bindings(&self) -> impl Iterator<Item = AclBinding> + '_ {
        self.by_pattern.iter().flat_map(|(pattern, entries)| {
            entries.iter().map(|entry| AclBinding {
                pattern: pattern.clone(),
                entry: entry.clone(),
            })
        })
    }

    /// Whether `principal` at `host` may do `operation` on the resource (`super_user` and
    /// `allow_if_no_acl` from the settings).
    pub fn allows(
        &self,
        principal: &str,
        host: &str,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
        allow_if_no_acl: bool,
    ) -> bool {
        let mut any_acl = false;
        let mut allowed = false;
        for (pattern, entries) in self.by_pattern.range(
            ResourcePattern {
                resource_type,
                pattern_type: PatternType::Literal,
                name: String::new(),
            }..,
        ) {
            if pattern.resource_type != resource_type {
                break;
            }
            if !pattern.covers(name) {
                continue;
            }
            for entry in entries {
                any_acl = true;
                let who = entry.principal == principal || entry.principal == ANY_PRINCIPAL;
                let from = entry.host == WILDCARD || entry.host == host;
                if !(who && from) {
                    continue;
                }
                match entry.permission {
                    Permission::Deny
                        if entry.operation == Operation::All || entry.operation == operation =>
                    {
                        return false;
                    }
                    Permission::Allow if implies(entry.operation, operation) => allowed = true,
                    _ => {}
                }
            }
        }
        allowed || (!any_acl && allow_if_no_acl)
    }
}

/// Whether an ALLOW for `granted` allows `wanted`.
fn implies(granted: Operation, wanted: Operation) -> bool {
    use Operation::*;
    granted == All
        || granted == wanted
        || (wanted == Describe && matches!(granted, Read | Write | Delete | Alter))
        || (wanted == DescribeConfigs && granted == AlterConfigs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(
        resource_type: ResourceType,
        pattern_type: PatternType,
        name: &str,
        principal: &str,
        operation: Operation,
        permission: Permission,
    ) -> AclBinding {
        AclBinding {
            pattern: ResourcePattern {
                resource_type,
                pattern_type,
                name: name.into(),
            },
            entry: AclEntry {
                principal: principal.into(),
                host: WILDCARD.into(),
                operation,
                permission,
            },
        }
    }

    fn set(acls: &[AclBinding]) -> AclSet {
        let mut set = AclSet::default();
        for a in acls {
            set.by_pattern
                .entry(a.pattern.clone())
                .or_default()
                .push(a.entry.clone());
        }
        set
    }

    use Operation::*;
    use PatternType::*;
    use Permission::*;
    use ResourceType::*;

    #[test]
    fn literal_prefixed_and_wildcard_patterns() {
        let acls = set(&[
            acl(Topic, Literal, "orders", "User:alice", Read, Allow),
            acl(Topic, Prefixed, "team-a.", "User:bob", Write, Allow),
            acl(Group, Literal, "*", "User:alice", Read, Allow),
        ]);
        let allows = |p: &str, op, t, n: &str| acls.allows(p, "10.0.0.1", op, t, n, false);
        assert!(allows("User:alice", Read, Topic, "orders"));
        assert!(
            allows("User:alice", Describe, Topic, "orders"),
            "READ implies DESCRIBE"
        );
        assert!(!allows("User:alice", Write, Topic, "orders"));
        assert!(!allows("User:alice", Read, Topic, "orders2"));
        assert!(allows("User:bob", Write, Topic, "team-a.events"));
        assert!(
            !allows("User:bob", Write, Topic, "team-b.events"),
            "prefix non-match"
        );
        assert!(!allows("User:bob", Read, Topic, "team-a.events"));
        assert!(allows("User:alice", Read, Group, "any-group"));
        assert!(!allows("User:carol", Read, Group, "any-group"));
        // No ACL names the resource: the setting decides.
        assert!(!acls.allows("User:x", "h", Create, Cluster, CLUSTER_NAME, false));
        assert!(acls.allows("User:x", "h", Create, Cluster, CLUSTER_NAME, true));
        assert!(
            !acls.allows("User:x", "h", Read, Topic, "orders", true),
            "an ACL names it"
        );
    }

    #[test]
    fn deny_overrides_allow_and_hosts_match() {
        let mut acls = vec![
            acl(Topic, Prefixed, "", "User:*", All, Allow),
            acl(Topic, Literal, "secret", "User:eve", Read, Deny),
        ];
        let mut from_host = acl(Topic, Literal, "audit", "User:ops", Read, Allow);
        from_host.entry.host = "10.0.0.9".into();
        acls.push(from_host);
        let acls = set(&acls);
        assert!(acls.allows("User:eve", "h", Read, Topic, "public", false));
        assert!(!acls.allows("User:eve", "h", Read, Topic, "secret", false));
        assert!(acls.allows("User:eve", "h", Write, Topic, "secret", false));
        assert!(acls.allows("User:ops", "10.0.0.9", Read, Topic, "audit", false));
        assert!(
            acls.allows("User:ops", "10.0.0.8", Read, Topic, "audit", false),
            "User:* ALL"
        );
        let acls = set(&[acl(Topic, Literal, "audit", "User:ops", Read, Allow)]);
        assert!(acls.allows("User:ops", "10.0.0.8", Read, Topic, "audit", false));
    }

    #[test]
    fn filters_select_bindings() {
        let a = acl(Topic, Literal, "orders", "User:alice", Read, Allow);
        let b = acl(Topic, Prefixed, "ord", "User:bob", Write, Deny);
        let any = AclFilter::from_wire(ANY, None, ANY, None, None, ANY, ANY).expect("filter");
        assert!(any.matches(&a) && any.matches(&b));
        let matching =
            AclFilter::from_wire(2, Some("orders"), MATCH, None, None, ANY, ANY).expect("filter");
        assert!(matching.matches(&a) && matching.matches(&b));
        let literal =
            AclFilter::from_wire(2, Some("orders"), 3, None, None, ANY, ANY).expect("filter");
        assert!(literal.matches(&a) && !literal.matches(&b));
        let bob =
            AclFilter::from_wire(ANY, None, ANY, Some("User:bob"), None, 4, 2).expect("filter");
        assert!(!bob.matches(&a) && bob.matches(&b));
        assert!(AclFilter::from_wire(99, None, ANY, None, None, ANY, ANY).is_none());
        assert!(AclFilter::from_wire(ANY, None, 0, None, None, ANY, ANY).is_none());
    }

    #[test]
    fn invalid_acls_are_refused() {
        let ok = AclBinding::from_wire(2, "t", 3, "User:a", "", 3, 3).expect("valid");
        assert_eq!(ok.entry.host, "*");
        assert_eq!(
            AclBinding::from_wire(2, "t", 3, "alice", "*", 3, 3),
            Err(InvalidAcl::Principal)
        );
        assert_eq!(
            AclBinding::from_wire(4, "other", 3, "User:a", "*", 3, 3),
            Err(InvalidAcl::ClusterName)
        );
        assert!(
            AclBinding::from_wire(1, "t", 3, "User:a", "*", 3, 3).is_err(),
            "ANY"
        );
        assert!(
            AclBinding::from_wire(2, "t", 2, "User:a", "*", 3, 3).is_err(),
            "MATCH"
        );
        assert!(
            AclBinding::from_wire(2, "t", 3, "User:a", "*", 1, 3).is_err(),
            "ANY op"
        );
        assert_eq!(
            Operation::from_name("describe-configs"),
            Some(DescribeConfigs)
        );
    }
}
