//! [`Db`]: a PostgreSQL pool over sqlx whose every query is a span and a
//! histogram sample, with a readiness check.
//!
//! `&Db` is an sqlx [`Executor`], so queries are written exactly as with a
//! `PgPool` — `sqlx::query("…").bind(x).fetch_one(&*db)` — and each one
//! gets:
//!
//! - a DEBUG span `otel.kind = client` with `db.system = "postgresql"`,
//!   `db.operation` (the statement's first keyword: `SELECT`, `INSERT`, …),
//!   `db.statement` (the SQL text with its `$1` placeholders — bound
//!   parameters are never recorded), `db.name` and `server.address`;
//! - `db_client_operation_duration_seconds{db_system, db_operation,
//!   outcome}` with outcome `ok` or `error`.
//!
//! Transactions from [`Db::begin`] are instrumented the same way.
//! [`Db::pool`] gives the plain pool for anything else.
//!
//! Given to the service with
//! [`with_client`](crate::Service::with_client), the pool is `Dep<Db>`,
//! `GET /ready` pings the database (503 naming `sql` when it does not
//! answer), and the pool is closed at shutdown.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, Stream};
use futures_util::{FutureExt, StreamExt};
use prometheus::HistogramVec;
use sqlx::postgres::{PgPool, PgPoolOptions, Postgres};
use sqlx::{Connection, Describe, Either, Execute, Executor};
use tracing::Instrument;

use crate::config::{BrokerUrl, Config};

use crate::error::Error;
use crate::observe::metrics;
/// The sqlx this client is built on, for writing queries without a version
/// of your own to keep in step.
pub use sqlx;

/// How long the readiness ping may take before the database counts as
/// down (`/ready` gives each check 5 s).
pub const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a query waits for a connection before failing, in pools made
/// by [`Db::connect`] and [`Db::connect_lazy`] (sqlx's default is 30 s,
/// which leaves a request hanging that long when the database is down).
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a pool could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// `PATRON_DATABASE_URL` is not set and no URL was given.
    #[error(
        "no database URL: set PATRON_DATABASE_URL (e.g. postgres://user:password@db:5432/app) or build the pool with Db::connect_lazy"
    )]
    NoUrl,
    /// The URL could not be parsed, or connecting failed.
    #[error("PostgreSQL at {url}: {source}")]
    Connect {
        /// The URL, password hidden.
        url: String,
        /// sqlx's error.
        source: sqlx::Error,
    },
}

/// An instrumented PostgreSQL pool. Cheap to clone (one shared pool).
///
/// ```no_run
/// use patron::client::sql::Db;
/// use patron::prelude::*;
///
/// #[patron::route(GET "/users/{id}/name")]
/// async fn name(Path(id): Path<i64>, db: Dep<Db>) -> Result<String, patron::Error> {
///     let (name,): (String,) = sqlx::query_as("SELECT name FROM users WHERE id = $1")
///         .bind(id)
///         .fetch_one(&*db)
///         .await
///         .map_err(|e| patron::Error::msg(format!("user {id}: {e}")))?;
///     Ok(name)
/// }
///
/// #[patron::main]
/// async fn main(service: Service) -> patron::Result<Service> {
///     // Lazy: no connection until the first query or readiness check.
///     let db = Db::from_config(service.current_config())?;
///     Ok(service.with_client(db))
/// }
/// ```
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    labels: Arc<Labels>,
}

/// What every span of this pool names: the database and the server.
struct Labels {
    database: String,
    server: String,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("server", &self.labels.server)
            .field("database", &self.labels.database)
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Connects now (one connection is opened to check the URL): start-up
    /// fails when the database is unreachable. Queries wait at most
    /// [`ACQUIRE_TIMEOUT`] for a connection; use [`from_pool`](Self::from_pool)
    /// for other pool settings.
    pub async fn connect(url: &str) -> Result<Db, SqlError> {
        let pool = PgPoolOptions::new()
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(|source| connect_error(url, source))?;
        Ok(Db::from_pool(pool))
    }

    /// A pool that opens connections on first use: start-up never waits
    /// for the database, and `/ready` says whether it answers. Queries wait
    /// at most [`ACQUIRE_TIMEOUT`] for a connection.
    pub fn connect_lazy(url: &str) -> Result<Db, SqlError> {
        let pool = PgPoolOptions::new()
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy(url)
            .map_err(|source| connect_error(url, source))?;
        Ok(Db::from_pool(pool))
    }

    /// A lazy pool (see [`connect_lazy`](Self::connect_lazy)) to
    /// `PATRON_DATABASE_URL`.
    pub fn from_config(config: &Config) -> Result<Db, SqlError> {
        let url = config.database_url.as_ref().ok_or(SqlError::NoUrl)?;
        Db::connect_lazy(url.expose())
    }

    /// Instruments a pool built with sqlx's own options (sizes, timeouts,
    /// TLS).
    pub fn from_pool(pool: PgPool) -> Db {
        let options = pool.connect_options();
        let labels = Labels {
            database: options.get_database().unwrap_or_default().to_string(),
            server: format!("{}:{}", options.get_host(), options.get_port()),
        };
        Db {
            pool,
            labels: Arc::new(labels),
        }
    }

    /// The plain pool: queries through it are not instrumented.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Starts a transaction whose queries are instrumented like the pool's.
    /// Dropped without [`Tx::commit`], it rolls back.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(Tx {
            inner: self.pool.begin().await?,
            labels: Arc::clone(&self.labels),
        })
    }

    /// Checks that a connection can be had and answers a ping within
    /// [`READY_TIMEOUT`].
    pub async fn ping(&self) -> Result<(), Error> {
        let server = &self.labels.server;
        let pinged = tokio::time::timeout(READY_TIMEOUT, async {
            let mut conn = self.pool.acquire().await?;
            conn.ping().await
        })
        .await;
        match pinged {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::msg(format!("PostgreSQL at {server}: {e}"))),
            Err(_) => Err(Error::msg(format!(
                "PostgreSQL at {server}: no answer within {}",
                humantime::format_duration(READY_TIMEOUT)
            ))),
        }
    }
}

fn connect_error(url: &str, source: sqlx::Error) -> SqlError {
    SqlError::Connect {
        url: BrokerUrl::new(url).redacted(),
        source,
    }
}

/// Managed by the service: `/ready` pings the database, shutdown closes
/// the pool (waiting for connections in use to come back).
impl crate::client::Client for Db {
    fn name(&self) -> String {
        "sql".to_string()
    }

    fn has_readiness(&self) -> bool {
        true
    }

    fn ready(&self) -> BoxFuture<'_, Result<(), Error>> {
        self.ping().boxed()
    }

    fn close(&self) -> BoxFuture<'_, Result<(), Error>> {
        async {
            self.pool.close().await;
            Ok(())
        }
        .boxed()
    }
}

/// A transaction from [`Db::begin`]; `&mut Tx` is an sqlx [`Executor`].
pub struct Tx {
    inner: sqlx::Transaction<'static, Postgres>,
    labels: Arc<Labels>,
}

impl fmt::Debug for Tx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tx")
            .field("server", &self.labels.server)
            .finish_non_exhaustive()
    }
}

impl Tx {
    /// Commits the transaction.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.inner.commit().await
    }

    /// Rolls the transaction back.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.inner.rollback().await
    }
}

/// `Executor` for `$ty` by delegation to the executor `$inner` (an
/// expression of `$this`, the `self` of each method), recording each query
/// as a [`Call`]: the pool and a transaction are instrumented alike.
macro_rules! instrumented_executor {
    ($ty:ty, $this:ident => $inner:expr) => {
        impl<'c> Executor<'c> for $ty {
            type Database = Postgres;

            fn fetch_many<'e, 'q: 'e, E>(
                self,
                query: E,
            ) -> BoxStream<
                'e,
                Result<Either<sqlx::postgres::PgQueryResult, sqlx::postgres::PgRow>, sqlx::Error>,
            >
            where
                'c: 'e,
                E: 'q + Execute<'q, Postgres>,
            {
                let $this = self;
                let call = Call::start(&$this.labels, query.sql());
                call.stream(($inner).fetch_many(query))
            }

            fn fetch_optional<'e, 'q: 'e, E>(
                self,
                query: E,
            ) -> BoxFuture<'e, Result<Option<sqlx::postgres::PgRow>, sqlx::Error>>
            where
                'c: 'e,
                E: 'q + Execute<'q, Postgres>,
            {
                let $this = self;
                let call = Call::start(&$this.labels, query.sql());
                call.future(($inner).fetch_optional(query))
            }

            fn prepare_with<'e, 'q: 'e>(
                self,
                sql: &'q str,
                parameters: &'e [sqlx::postgres::PgTypeInfo],
            ) -> BoxFuture<'e, Result<sqlx::postgres::PgStatement<'q>, sqlx::Error>>
            where
                'c: 'e,
            {
                let $this = self;
                ($inner).prepare_with(sql, parameters)
            }

            fn describe<'e, 'q: 'e>(
                self,
                sql: &'q str,
            ) -> BoxFuture<'e, Result<Describe<Postgres>, sqlx::Error>>
            where
                'c: 'e,
            {
                let $this = self;
                ($inner).describe(sql)
            }
        }
    };
}

instrumented_executor!(&'c Db, db => &db.pool);
instrumented_executor!(&'c mut Tx, tx => &mut *tx.inner);

/// One instrumented query: its span, operation and start time.
struct Call {
    span: tracing::Span,
    operation: &'static str,
    started: Instant,
}

impl Call {
    fn start(labels: &Labels, sql: &str) -> Call {
        let operation = operation(sql);
        let span = tracing::debug_span!(
            "SQL query",
            otel.name = %format_args!("{operation} {}", labels.database),
            otel.kind = "client",
            db.system = "postgresql",
            db.operation = operation,
            db.statement = sql,
            db.name = %labels.database,
            server.address = %labels.server,
            otel.status_code = tracing::field::Empty,
            error.message = tracing::field::Empty,
        );
        Call {
            span,
            operation,
            started: Instant::now(),
        }
    }

    /// Records the outcome on the span and the histogram.
    fn finish(&self, error: Option<&sqlx::Error>) {
        let outcome = if error.is_some() { "error" } else { "ok" };
        super::finish_call(
            &self.span,
            error.map(|e| e as &dyn std::fmt::Display),
            duration_histogram(),
            &["postgresql", self.operation, outcome],
            self.started,
        );
    }

    fn future<'e, T: 'e>(
        self,
        inner: BoxFuture<'e, Result<T, sqlx::Error>>,
    ) -> BoxFuture<'e, Result<T, sqlx::Error>> {
        let span = self.span.clone();
        async move {
            let result = inner.await;
            self.finish(result.as_ref().err());
            result
        }
        .instrument(span)
        .boxed()
    }

    fn stream<'e, T: Send + 'e>(
        self,
        inner: BoxStream<'e, Result<T, sqlx::Error>>,
    ) -> BoxStream<'e, Result<T, sqlx::Error>> {
        Timed {
            inner,
            call: Some(self),
        }
        .boxed()
    }
}

/// A result stream that records its call when it ends, fails or is
/// dropped part-way (as `fetch_one` over `fetch_many` does).
struct Timed<'e, T> {
    inner: BoxStream<'e, Result<T, sqlx::Error>>,
    call: Option<Call>,
}

impl<T> Stream for Timed<'_, T> {
    type Item = Result<T, sqlx::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let polled = match &this.call {
            Some(call) => call.span.in_scope(|| this.inner.poll_next_unpin(cx)),
            None => return Poll::Ready(None),
        };
        match &polled {
            Poll::Ready(None) => {
                if let Some(call) = this.call.take() {
                    call.finish(None);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(call) = this.call.take() {
                    call.finish(Some(e));
                }
            }
            _ => {}
        }
        polled
    }
}

impl<T> Drop for Timed<'_, T> {
    fn drop(&mut self) {
        if let Some(call) = self.call.take() {
            call.finish(None);
        }
    }
}

/// Statement keywords used as `db.operation`; anything else is `OTHER`, so
/// the metric's label set stays small whatever SQL is run.
const OPERATIONS: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "MERGE",
    "WITH",
    "VALUES",
    "CREATE",
    "ALTER",
    "DROP",
    "TRUNCATE",
    "BEGIN",
    "START",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT",
    "RELEASE",
    "SET",
    "SHOW",
    "EXPLAIN",
    "COPY",
    "CALL",
    "DO",
    "LOCK",
    "LISTEN",
    "NOTIFY",
    "UNLISTEN",
    "VACUUM",
    "ANALYZE",
    "GRANT",
    "REVOKE",
    "COMMENT",
    "PREPARE",
    "EXECUTE",
    "DEALLOCATE",
    "DECLARE",
    "FETCH",
    "CLOSE",
    "REFRESH",
];

/// The statement's first keyword, after whitespace, comments and opening
/// parentheses.
fn operation(sql: &str) -> &'static str {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(comment) = rest.strip_prefix("--") {
            rest = comment.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(comment) = rest.strip_prefix("/*") {
            rest = comment.split_once("*/").map_or("", |(_, r)| r);
        } else {
            break;
        }
    }
    let word = rest
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default();
    OPERATIONS
        .iter()
        .find(|op| op.eq_ignore_ascii_case(word))
        .copied()
        .unwrap_or("OTHER")
}

fn duration_histogram() -> Option<&'static HistogramVec> {
    static HISTOGRAM: OnceLock<Option<HistogramVec>> = OnceLock::new();
    metrics::global().duration_histogram(
        &HISTOGRAM,
        "db_client_operation_duration_seconds",
        "Duration of database queries, from sending to the last row read.",
        &["db_system", "db_operation", "outcome"],
    )
}

#[cfg(test)]
mod tests {
    use super::operation;

    #[test]
    fn the_operation_is_the_first_keyword_and_unknown_ones_are_other() {
        assert_eq!(operation("select 1"), "SELECT");
        assert_eq!(operation("  \n INSERT INTO t VALUES ($1)"), "INSERT");
        assert_eq!(
            operation("-- why\n/* how */ (SELECT 1) UNION (SELECT 2)"),
            "SELECT"
        );
        assert_eq!(operation("with x as (select 1) select * from x"), "WITH");
        assert_eq!(operation("frobnicate everything"), "OTHER");
        assert_eq!(operation(""), "OTHER");
        assert_eq!(operation("/* unterminated"), "OTHER");
    }
}
