//! `ingest serve`: binds, recovers the spool, starts the writer and the spool
//! monitor, accepts connections under a cap with header/body timeouts, and on
//! SIGTERM/SIGINT stops accepting, drains, hands the open file over and returns.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{watch, Semaphore};

use crate::http::{self, Ctx, HttpConfig};
use crate::metrics::Metrics;
use crate::spool::{self, Spool, WriterLock};
use crate::writer::{Writer, WriterConfig};

/// Everything `serve` needs, from the command line.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The spool's root.
    pub spool: PathBuf,
    /// Writer settings.
    pub writer: WriterConfig,
    /// Request settings.
    pub http: HttpConfig,
    /// Time allowed for a request's headers (and the idle time between requests on
    /// a kept-alive connection).
    pub header_timeout: Duration,
    /// Connections served at once; more wait in the listen queue.
    pub max_connections: usize,
    /// How long SIGTERM waits for in-flight requests.
    pub drain_timeout: Duration,
    /// How often free space and backlog are measured.
    pub monitor_interval: Duration,
}

/// Runs the server until SIGTERM/SIGINT; `Ok` after a clean drain and hand-over.
pub fn serve(config: ServeConfig) -> Result<()> {
    // A file size limit must fail a write (EFBIG, answered 503), not kill the server.
    // SAFETY: setting a signal's disposition to SIG_IGN is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let spool = Spool::create(&config.spool)?;
    let lock = WriterLock::acquire(&spool, &config.writer.writer_id)?;
    for r in spool::recover(
        &spool,
        &config.writer.writer_id,
        config.http.max_path,
        config.http.max_body,
    )? {
        eprintln!(
            "ingest: recovered open/{}: {} records kept, {} torn bytes cut, {} damaged regions, {}",
            r.name,
            r.records,
            r.truncated,
            r.skipped,
            if r.handed_over {
                "handed over to ready/"
            } else {
                "empty, removed"
            }
        );
    }
    let metrics = Arc::new(Metrics::default());
    measure(&spool, &metrics);
    let (writer, handle) =
        Writer::start(spool.clone(), lock, config.writer.clone(), metrics.clone())
            .context("cannot start the log writer")?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let ctx = Arc::new(Ctx {
        config: config.http.clone(),
        metrics: metrics.clone(),
        writer: handle,
        stopping: AtomicBool::new(false),
    });
    let result = runtime.block_on(run(&config, spool, ctx));
    // In-flight requests have drained (or the drain timed out): append what is
    // queued, hand the open file over.
    writer.shutdown();
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

fn measure(spool: &Spool, m: &Metrics) {
    match spool::free_bytes(&spool.root) {
        Ok(free) => m.free_bytes.store(free, Ordering::Relaxed),
        Err(e) => eprintln!(
            "ingest: cannot measure free space on {}: {e}",
            spool.root.display()
        ),
    }
    match spool::scan_backlog(spool, SystemTime::now()) {
        Ok(b) => {
            // Files on their way to ready/ count too (a moment's double count when
            // the rename lands mid-scan errs on the side of backpressure).
            let files = b.files + m.in_transit_files.load(Ordering::Relaxed);
            let bytes = b.bytes + m.in_transit_bytes.load(Ordering::Relaxed);
            m.backlog_files.store(files, Ordering::Relaxed);
            m.backlog_bytes.store(bytes, Ordering::Relaxed);
            m.oldest_ready_secs
                .store(b.oldest_ready_secs, Ordering::Relaxed);
        }
        Err(e) => eprintln!("ingest: cannot scan the spool backlog: {e}"),
    }
}

async fn run(config: &ServeConfig, spool: Spool, ctx: Arc<Ctx>) -> Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let local = listener.local_addr()?;
    eprintln!(
        "ingest: listening on {local} (pid {}, writer id {}, spool {})",
        std::process::id(),
        config.writer.writer_id,
        spool.root.display()
    );

    let monitor = {
        let (spool, metrics, every) = (spool.clone(), ctx.metrics.clone(), config.monitor_interval);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let (s, m) = (spool.clone(), metrics.clone());
                let _ = tokio::task::spawn_blocking(move || measure(&s, &m)).await;
            }
        })
    };

    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let slots = Arc::new(Semaphore::new(config.max_connections));

    loop {
        let permit = tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            p = slots.clone().acquire_owned() => p.expect("semaphore open"),
        };
        let (stream, peer) = tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: wait a little rather than spin.
                    eprintln!("ingest: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        let mut stop = stop_rx.clone();
        let header_timeout = config.header_timeout;
        tokio::spawn(async move {
            ctx.metrics.connections.fetch_add(1, Ordering::Relaxed);
            let svc_ctx = ctx.clone();
            let svc = service_fn(move |req| http::handle(req, svc_ctx.clone(), peer));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.as_mut().await;
                }
            }
            ctx.metrics.connections.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    // Stop accepting: the listener closes now, new connections are refused.
    drop(listener);
    ctx.stopping.store(true, Ordering::Relaxed);
    eprintln!("ingest: stopping: draining connections");
    let _ = stop_tx.send(true);
    let all = u32::try_from(config.max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(config.drain_timeout, slots.acquire_many(all)).await {
        Ok(_) => {}
        Err(_) => eprintln!(
            "ingest: drain timed out after {:?} with {} connections open",
            config.drain_timeout,
            ctx.metrics.connections.load(Ordering::Relaxed)
        ),
    }
    monitor.abort();
    Ok(())
}
