//! The HTTP application and the `serve` command.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::Config;
use crate::error::AppError;
use crate::state::AppState;
use crate::store::Store;

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let metrics = state.metrics.clone();
    let config = state.config.clone();
    let request_timeout = Duration::from_secs(config.request_timeout_secs);
    let ui = crate::web::WebUi::new(config.web_dir.as_deref());
    // The validator would send the document's URL to swagger.io.
    let docs = SwaggerUi::new("/docs")
        .url("/openapi.json", crate::openapi::spec())
        .config(utoipa_swagger_ui::Config::default().validator_url("none"));
    crate::api::router(state)
        .merge(docs)
        .fallback(move |request: axum::extract::Request| {
            let ui = ui.clone();
            async move { ui.answer(request).await }
        })
        .method_not_allowed_fallback(|| async { AppError::MethodNotAllowed })
        .layer(axum::middleware::from_fn_with_state(
            request_timeout,
            crate::layers::time_limit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            crate::metrics::track_http,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn_with_state(
            config,
            crate::layers::security_headers,
        ))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
}

/// The span of a request. Browsers pass the chat WebSocket's token in the
/// query, so the logged URI has the values of credential parameters hidden.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %request.method(),
        uri = %redacted_uri(request.uri()),
        version = ?request.version(),
    )
}

/// Query parameters whose values are credentials.
const SECRET_PARAMS: &[&str] = &["access_token", "token", "api_key", "key", "refresh_token"];

/// The path and query of `uri`, with the values of credential parameters
/// replaced by `***`.
fn redacted_uri(uri: &axum::http::Uri) -> String {
    let Some(query) = uri.query() else {
        return uri.path().to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if SECRET_PARAMS.contains(&name.to_ascii_lowercase().as_str()) => {
                format!("{name}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{}?{}", uri.path(), query.join("&"))
}

fn panic_response(err: Box<dyn Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    tracing::error!(panic = what, "a request handler panicked");
    let mut response = AppError::Internal(anyhow::anyhow!("handler panicked")).into_response();
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    response
}

/// Removes expired temporary chats and refresh sessions every minute.
fn spawn_sweeper(store: Arc<dyn Store>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let now = crate::time::now();
            match store.purge_expired_chats(now).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(chats = n, "removed expired temporary chats"),
                Err(err) => tracing::warn!(%err, "sweeping expired chats failed"),
            }
            if let Err(err) = store.purge_expired_sessions(now).await {
                tracing::warn!(%err, "sweeping expired sessions failed");
            }
        }
    });
}

/// Runs the server until Ctrl-C or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    crate::openapi::check_routes().map_err(|e| anyhow::anyhow!(e))?;
    // Bad certificate files stop the start before anything else happens.
    let identity = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::Identity::load(cert, key)?),
        _ => None,
    };
    crate::store::restrict_new_files();
    crate::store::secure_data_dir(&config.data_dir)
        .map_err(|e| anyhow::anyhow!("securing the data dir {}: {e}", config.data_dir.display()))?;
    let store = crate::store::open(config.database.as_deref(), &config.data_dir).await?;
    tracing::info!(store = store.kind(), "store opened");
    match crate::chat::recover_interrupted(store.as_ref()).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            answers = n,
            "answers cut off when the server last stopped are stored as interrupted"
        ),
        Err(err) => tracing::warn!(%err, "could not mark interrupted answers"),
    }
    if store.count_users().await? == 0 {
        println!(
            "No accounts yet. Create the first admin with:\n  corral admin create --username admin --role admin{}",
            admin_hint_flags(&config)
        );
    }
    let bind = config.bind;
    let state = AppState::new(store.clone(), config).await?;
    match crate::registry::register_demo_model(&state).await {
        Ok(Some(model)) => println!("Registered the demo model `{}`.", model.name),
        Ok(None) => {}
        Err(err) => tracing::warn!("{err:#}"),
    }
    spawn_sweeper(store);
    state.inference.manager.spawn_idle_sweeper();
    state.nodes.spawn_poller();
    crate::api::nodes::spawn_sync(&state);
    match state.downloads.resume_all().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(downloads = n, "resumed model downloads"),
        Err(err) => tracing::warn!(%err, "could not resume model downloads"),
    }
    let listener = tokio::net::TcpListener::bind(bind).await?;
    let local = listener.local_addr()?;
    let scheme = if identity.is_some() { "https" } else { "http" };
    let tls = match identity {
        Some(identity) => {
            crate::tls::watch(identity.clone());
            let shown = crate::tls::show(&identity.fingerprint());
            tracing::info!(fingerprint = %shown, "serving TLS");
            // What another host pins to use this one as an upstream.
            println!("TLS certificate SHA-256 fingerprint: {shown}");
            Some(tokio_rustls::TlsAcceptor::from(crate::tls::server_config(
                identity,
            )?))
        }
        None => None,
    };
    tracing::info!(%local, scheme, "listening");
    println!("Corral is listening on {scheme}://{local} (API docs at {scheme}://{local}/docs)");
    let limits = crate::listener::ConnectionLimits::from_config(&state.config);
    let shutdown = state.shutdown.clone();
    let runs = state.chat_runs.clone();
    let grace = Duration::from_secs(state.config.shutdown_grace_secs);
    let mut server = tokio::spawn({
        let shutdown = shutdown.clone();
        crate::listener::serve(listener, app(state), limits, tls, async move {
            shutdown.begun().await
        })
    });
    tokio::select! {
        ended = &mut server => return Ok(ended??),
        () = shutdown_signal() => {}
    }
    wind_down(&shutdown, &runs, grace, server).await
}

/// How long stopped answers get to store themselves.
const STOP_WAIT: Duration = Duration::from_secs(5);
/// How long open streams and connections get to close after the answers
/// ended.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// Stops without losing answers: no new connection or answer is taken,
/// event streams end, running answers get `grace` to finish and are then
/// stopped (stored as `cancelled` with their text), and the server returns
/// once their streams have closed.
async fn wind_down(
    shutdown: &crate::shutdown::Shutdown,
    runs: &crate::chat::ChatRuns,
    grace: Duration,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
) -> anyhow::Result<()> {
    runs.close();
    shutdown.begin();
    let deadline = tokio::time::Instant::now() + grace;
    if !runs.wait_idle(deadline).await {
        tracing::info!(
            answers = runs.running(),
            "stopping the answers still running"
        );
        runs.stop_all();
        if !runs
            .wait_idle(tokio::time::Instant::now() + STOP_WAIT)
            .await
        {
            tracing::warn!(answers = runs.running(), "answers did not stop in time");
        }
    }
    let closing = tokio::time::Instant::now() + CLOSE_WAIT;
    if !shutdown.wait_streams_closed(closing).await {
        tracing::warn!(
            streams = shutdown.open_streams(),
            "streams still open at shutdown"
        );
    }
    match tokio::time::timeout_at(closing, server).await {
        Ok(ended) => ended??,
        Err(_) => tracing::warn!("connections still open at shutdown; closing them"),
    }
    tracing::info!("stopped");
    Ok(())
}

/// The flags `admin create` needs to reach the same store as this server.
fn admin_hint_flags(config: &Config) -> String {
    match &config.database {
        Some(_) => " --database <the same URL>".to_owned(),
        None if config.data_dir != Config::default().data_dir => {
            format!(" --data-dir {}", config.data_dir.display())
        }
        None => String::new(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod span_tests {
    use super::redacted_uri;
    use axum::http::Uri;

    #[test]
    fn tokens_in_the_query_are_hidden() {
        let uri: Uri = "/api/chats/ws?access_token=eyJhbGciOi.secret.sig&x=1"
            .parse()
            .unwrap();
        let logged = redacted_uri(&uri);
        assert_eq!(logged, "/api/chats/ws?access_token=***&x=1");
        assert!(!logged.contains("secret"));
        let uri: Uri = "/api/models?page=2".parse().unwrap();
        assert_eq!(redacted_uri(&uri), "/api/models?page=2");
        let uri: Uri = "/api/chats/ws?Access_Token=abc".parse().unwrap();
        assert_eq!(redacted_uri(&uri), "/api/chats/ws?Access_Token=***");
        let uri: Uri = "http://h/healthz".parse().unwrap();
        assert_eq!(redacted_uri(&uri), "/healthz");
    }
}
