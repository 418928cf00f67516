//! Start-up validation: everything that can be known wrong before a port
//! opens. All problems are collected and reported together.

use std::collections::BTreeMap;
use std::fmt;

use super::write_list;
use crate::consumer::registry::ConsumerDef;
use crate::deps::Deps;
use crate::http::builtin::RESERVED;
use crate::http::registry::RouteDef;

/// The service cannot start; each entry says what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub struct StartupError {
    /// One sentence per problem.
    pub problems: Vec<String>,
}

impl fmt::Display for StartupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_list(f, &self.problems, "the service cannot start: ", |n| {
            format!("the service cannot start ({n} problems):")
        })
    }
}

/// `/users/{id}` → `/users/{}`: the shape axum's router matches on.
fn shape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_param = false;
    let mut wildcard = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                wildcard = false;
                out.push('{');
            }
            '}' if in_param => {
                in_param = false;
                if wildcard {
                    out.push('*');
                }
                out.push('}');
            }
            '*' if in_param => wildcard = true,
            _ if in_param => {}
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn check(
    routes: &[&'static RouteDef],
    consumers: &[&'static ConsumerDef],
    deps: &Deps,
    components: usize,
) -> Result<(), StartupError> {
    let mut problems = Vec::new();
    if routes.is_empty() && components == 0 {
        problems.push(
            "no routes, consumers or components are registered, so the service would do nothing. \
             If routes or consumers are defined with #[patron::route] / #[patron::consumer] in a library crate, the linker may have \
             dropped them because nothing references that crate: add `use that_crate as _;` to the binary"
                .to_string(),
        );
    }
    let mut by_shape: BTreeMap<String, Vec<&'static RouteDef>> = BTreeMap::new();
    for r in routes {
        by_shape.entry(shape(r.path)).or_default().push(r);
    }
    for group in by_shape.values() {
        for (i, a) in group.iter().enumerate() {
            for b in &group[i + 1..] {
                if a.path != b.path {
                    if i == 0 || !group[..i].iter().any(|c| c.path == a.path) {
                        problems.push(format!(
                            "paths {} ({} in {}) and {} ({} in {}) differ only in parameter names; use the same names",
                            a.path, a.location(), a.handler, b.path, b.location(), b.handler
                        ));
                    }
                } else if a.method == b.method {
                    problems.push(format!(
                        "duplicate route {}: defined at {} ({}) and at {} ({}); remove or rename one",
                        a.span_name,
                        a.location(),
                        a.qualified_handler(),
                        b.location(),
                        b.qualified_handler()
                    ));
                }
            }
        }
    }
    for r in routes {
        if RESERVED.contains(&r.path) || crate::http::debug::PATHS.contains(&r.path) {
            problems.push(format!(
                "route {} at {} ({}) takes a path patron reserves for its built-in endpoint; choose another path",
                r.span_name,
                r.location(),
                r.qualified_handler()
            ));
        }
        for dep in r.deps {
            if !deps.contains((dep.type_id)()) {
                problems.push(format!(
                    "handler {} ({}, route {}) takes `Dep<{}>`, but no `{}` was provided: call `service.provide(…)` with one in `#[patron::main]`",
                    r.qualified_handler(),
                    r.location(),
                    r.span_name,
                    dep.type_name,
                    dep.type_name
                ));
            }
        }
        if let Some(auth) = &r.auth
            && !deps.contains((auth.type_id)())
        {
            problems.push(format!(
                    "route {} at {} ({}) requires the authenticator `{}`, but the service does not provide one: call `service.provide(…)` with a `{}`",
                    r.span_name,
                    r.location(),
                    r.qualified_handler(),
                    auth.type_name,
                    auth.type_name
                ));
        }
    }
    missing_consumer_deps(consumers, deps, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(StartupError { problems })
    }
}

/// The consumers' `Dep<T>` checks alone, for running consumers without a
/// service (the in-memory test broker).
pub(crate) fn check_consumer_deps(
    consumers: &[&'static ConsumerDef],
    deps: &Deps,
) -> Result<(), StartupError> {
    let mut problems = Vec::new();
    missing_consumer_deps(consumers, deps, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(StartupError { problems })
    }
}

/// A problem for each `Dep<T>` a consumer takes that `deps` lacks.
fn missing_consumer_deps(
    consumers: &[&'static ConsumerDef],
    deps: &Deps,
    problems: &mut Vec<String>,
) {
    for c in consumers {
        for dep in c.deps {
            if !deps.contains((dep.type_id)()) {
                problems.push(format!(
                    "consumer {} ({}, {} \"{}\") takes `Dep<{}>`, but no `{}` was provided: call `service.provide(…)` with one in `#[patron::main]`",
                    c.qualified_handler(),
                    c.location(),
                    c.broker,
                    c.destination,
                    dep.type_name,
                    dep.type_name
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_ignore_parameter_names() {
        assert_eq!(shape("/users/{id}"), shape("/users/{name}"));
        assert_ne!(shape("/users/{id}"), shape("/users/{*rest}"));
        assert_eq!(shape("/a/b"), "/a/b");
    }
}
