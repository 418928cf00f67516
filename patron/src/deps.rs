//! Dependencies a service `provide`s and handlers take as [`Dep<T>`].
//!
//! Values are stored once, by type, behind an `Arc`. Which handler needs which
//! type is known from the route attributes, so a missing dependency is a
//! start-up error, never a 500 at request time.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use http::request::Parts;

use crate::error::Error;

/// The typed values a service provides.
#[derive(Default, Clone)]
pub struct Deps {
    values: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl Deps {
    /// Stores `value`, replacing an earlier value of the same type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.values.insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// Stores an already shared value.
    pub fn insert_arc<T: Send + Sync + 'static>(&mut self, value: Arc<T>) {
        self.values.insert(TypeId::of::<T>(), value);
    }

    /// The value of type `T`, if one was provided.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.values
            .get(&TypeId::of::<T>())
            .and_then(|v| Arc::clone(v).downcast::<T>().ok())
    }

    /// Whether a value with this type id was provided.
    pub fn contains(&self, id: TypeId) -> bool {
        self.values.contains_key(&id)
    }
}

impl fmt::Debug for Deps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deps")
            .field("count", &self.values.len())
            .finish()
    }
}

/// The router state: what extractors need from the service.
#[doc(hidden)]
#[derive(Clone, Debug, Default)]
pub struct AppState {
    pub(crate) deps: Arc<Deps>,
}

/// A dependency the service provided with `Service::provide`, taken by a
/// handler as an argument.
///
/// ```
/// use patron::prelude::*;
///
/// struct Greeting(&'static str);
///
/// #[patron::route(GET "/greet")]
/// async fn greet(greeting: Dep<Greeting>) -> &'static str {
///     greeting.0
/// }
/// # fn main() {}
/// ```
pub struct Dep<T: ?Sized>(Arc<T>);

impl<T: ?Sized> Dep<T> {
    /// The shared value.
    pub fn arc(&self) -> Arc<T> {
        Arc::clone(&self.0)
    }
}

impl<T: ?Sized> Dep<T> {
    pub(crate) fn from_arc(value: Arc<T>) -> Self {
        Dep(value)
    }
}

impl<T> Dep<T> {
    /// Wraps a value, for calling a handler directly in a unit test.
    pub fn new(value: T) -> Self {
        Dep(Arc::new(value))
    }
}

impl<T: ?Sized> Clone for Dep<T> {
    fn clone(&self) -> Self {
        Dep(Arc::clone(&self.0))
    }
}

impl<T: ?Sized> Deref for Dep<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Dep<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Dep").field(&&*self.0).finish()
    }
}

impl<T: Send + Sync + 'static> FromRequestParts<AppState> for Dep<T> {
    type Rejection = Error;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Self, Error> {
        state.deps.get::<T>().map(Dep).ok_or_else(|| {
            Error::internal(format!(
                "dependency `{}` was not provided to the service",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// A `Dep<T>` a handler takes.
#[doc(hidden)]
#[derive(Debug)]
pub struct DepSpec {
    /// `T` as written in the signature.
    pub type_name: &'static str,
    /// Its `TypeId`.
    pub type_id: fn() -> TypeId,
}
