//! A store whose writes fail, panic, stall or wait for the test: faults injected into flushes.

use super::*;

/// What an [`InjectedWrites`] store does to every write.
#[derive(Debug)]
pub(super) enum WriteFault {
    /// Panics: stands for a bug in the flush path.
    Panic,
    /// Moves the clock on by this much before writing: the writer was paused mid-upload.
    Pause(Arc<ManualClock>, i64),
    /// Holds every write until the test releases it (to succeed or fail).
    Gate(Arc<PutGate>),
}

/// Writes held in arrival order, each released by the test.
#[derive(Debug, Default)]
pub(super) struct PutGate {
    held: std::sync::Mutex<Vec<Option<tokio::sync::oneshot::Sender<bool>>>>,
}

impl PutGate {
    /// Waits until `count` writes have arrived.
    pub(super) async fn arrived(&self, count: usize) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.held.lock().expect("gate").len() < count {
            assert!(
                tokio::time::Instant::now() < deadline,
                "write {count} never came"
            );
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// Lets write `index` (0: the first to arrive) go on, or fail.
    pub(super) fn release(&self, index: usize, succeed: bool) {
        let sender = self.held.lock().expect("gate")[index]
            .take()
            .expect("released once");
        let _ = sender.send(succeed);
    }
}

/// An in-memory object store with a fault injected into every write.
#[derive(Debug)]
pub(super) struct InjectedWrites(pub(super) InMemory, pub(super) WriteFault);

impl std::fmt::Display for InjectedWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InjectedWrites({:?})", self.1)
    }
}

#[async_trait::async_trait]
impl ObjectStore for InjectedWrites {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        options: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        match &self.1 {
            WriteFault::Panic => panic!("injected flush-path bug"),
            WriteFault::Pause(clock, ms) => {
                clock.advance_ms(*ms);
                self.0.put_opts(location, payload, options).await
            }
            WriteFault::Gate(gate) => {
                let (sender, released) = tokio::sync::oneshot::channel();
                gate.held.lock().expect("gate").push(Some(sender));
                if released.await.unwrap_or(false) {
                    self.0.put_opts(location, payload, options).await
                } else {
                    Err(object_store::Error::Generic {
                        store: "gate",
                        source: "injected upload failure".into(),
                    })
                }
            }
        }
    }
    async fn put_multipart_opts(
        &self,
        _: &object_store::path::Path,
        _: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        panic!("injected flush-path bug");
    }
    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.0.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.0.delete_stream(locations)
    }
    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.0.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.0.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.0.copy_opts(from, to, options).await
    }
}
