use super::*;

/// The message as delivery reads it.
fn message(spool: &Spool, id: &str) -> Vec<u8> {
    let size = spool.load(id).unwrap().size;
    let bytes = spool.message(id).read(size).unwrap();
    assert_eq!(bytes.len() as u64, size);
    bytes
}

/// A relay's spool with one file per message (`spool_segments: false`).
fn files_only(d: &tempfile::TempDir) -> Spool {
    Spool::open_with(d.path(), false).unwrap()
}

fn env() -> Envelope {
    Envelope {
        version: ENVELOPE_VERSION,
        id: String::new(),
        node_id: "n".into(),
        received_at: 1,
        received_ms: 0,
        client_ip: "127.0.0.1".into(),
        helo: "c".into(),
        peer: None,
        tls: None,
        mail_from: "a@b.test".into(),
        body: Body::Unspecified,
        smtputf8: false,
        requiretls: false,
        tls_required_no: false,
        ret: None,
        envid: None,
        size: 0,
        message_id_hash: None,
        recipients: vec![Recipient {
            address: "x@y.test".into(),
            domain: "y.test".into(),
            orcpt: None,
            notify: 0,
            status: RcptStatus::Pending,
            last_failure: None,
            notified: false,
        }],
        attempts: 0,
        next_attempt: 1,
        is_bounce: false,
    }
}

#[tokio::test]
async fn commit_makes_message_and_envelope_visible() {
    let d = tempfile::tempdir().unwrap();
    let spool = files_only(&d);
    let mut inc = spool.incoming().await.unwrap();
    inc.write(b"Subject: a\r\n\r\nbody\r\n").await.unwrap();
    let c = inc.commit(env()).await.unwrap();
    let e = spool.load(c.id()).unwrap();
    assert_eq!(e.size, 20);
    assert_eq!(message(&spool, c.id()), b"Subject: a\r\n\r\nbody\r\n");
    assert!(
        !d.path().join(format!("queue/{}.env", c.id())).exists(),
        "one file per message until the envelope changes"
    );
    assert!(
        std::fs::read_dir(d.path().join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "tmp is clean"
    );
}

#[tokio::test]
async fn an_uncommitted_message_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let spool = Spool::open(d.path()).unwrap();
    let mut inc = spool.incoming().await.unwrap();
    inc.write(b"partial").await.unwrap();
    drop(inc);
    let (envs, bad) = spool.scan().unwrap();
    assert!(envs.is_empty() && bad.is_empty());
    assert!(std::fs::read_dir(d.path().join("tmp"))
        .unwrap()
        .next()
        .is_none());
}

#[tokio::test]
async fn recovery_keeps_committed_and_drops_orphans() {
    let d = tempfile::tempdir().unwrap();
    let spool = Spool::open(d.path()).unwrap();
    let mut inc = spool.incoming().await.unwrap();
    inc.write(b"m").await.unwrap();
    let c = inc.commit(env()).await.unwrap();
    // A crash between the two renames leaves a data file without envelope.
    std::fs::write(d.path().join("queue/00000000000000000.msg"), b"orphan").unwrap();
    // A crash during reception leaves a tmp file.
    std::fs::write(d.path().join("tmp/1111111111111.msg"), b"tmp").unwrap();
    drop(spool);
    let spool = Spool::open(d.path()).unwrap();
    let (envs, _) = spool.scan().unwrap();
    assert_eq!(envs.len(), 1);
    assert_eq!(envs[0].id, c.id());
    assert!(!d.path().join("queue/00000000000000000.msg").exists());
    assert!(!d.path().join("tmp/1111111111111.msg").exists());
}

#[tokio::test]
async fn update_and_remove() {
    let d = tempfile::tempdir().unwrap();
    let spool = Spool::open(d.path()).unwrap();
    let c = spool.inject(env(), b"x").await.unwrap();
    let mut e = spool.load(c.id()).unwrap();
    e.attempts = 3;
    spool.update(&e).unwrap();
    assert_eq!(spool.load(c.id()).unwrap().attempts, 3);
    spool.remove(c.id()).unwrap();
    assert!(matches!(spool.load(c.id()), Err(SpoolError::NotFound(_))));
    assert!(matches!(spool.remove(c.id()), Err(SpoolError::NotFound(_))));
}

#[test]
fn queue_ids_are_unique_and_validated() {
    let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_queue_id()).collect();
    assert_eq!(ids.len(), 1000);
    assert!(ids.iter().all(|i| is_queue_id(i)));
    for bad in ["../etc/passwd", "", "abc", "ZZZZZZZZZZ"] {
        assert!(!is_queue_id(bad), "{bad}");
    }
}

#[tokio::test]
async fn corrupt_envelope_is_reported_not_fatal() {
    let d = tempfile::tempdir().unwrap();
    let spool = files_only(&d);
    let c = spool.inject(env(), b"x").await.unwrap();
    // A rewritten envelope that is not JSON.
    std::fs::write(d.path().join(format!("queue/{}.env", c.id())), b"{not json").unwrap();
    // A message file whose embedded envelope is cut short.
    let cut = spool.inject(env(), b"y").await.unwrap();
    let path = spool.msg_path(cut.id());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 3);
    std::fs::write(&path, &bytes).unwrap();
    // A trailer that claims more than the file holds.
    let long = spool.inject(env(), b"z").await.unwrap();
    let mut f = b"z".to_vec();
    f.extend_from_slice(b"\nHGENV1 9999999999\n");
    std::fs::write(spool.msg_path(long.id()), f).unwrap();
    let (envs, bad) = spool.scan().unwrap();
    assert!(envs.is_empty(), "{envs:?}");
    assert_eq!(bad.len(), 3, "{bad:?}");
}

#[tokio::test]
async fn a_second_relay_cannot_open_a_locked_spool_and_commands_do_not_clean_it() {
    let d = tempfile::tempdir().unwrap();
    let spool = files_only(&d);
    assert!(Spool::is_in_use(d.path()));
    assert!(matches!(Spool::open(d.path()), Err(SpoolError::Locked(_))));
    // A reception in progress survives an operator command attaching to the spool.
    let mut inc = spool.incoming().await.unwrap();
    inc.write(b"in flight").await.unwrap();
    let attached = Spool::attach(d.path()).unwrap();
    attached.scan().unwrap();
    let c = inc.commit(env()).await.unwrap();
    assert_eq!(message(&spool, c.id()), b"in flight");
    // Files a scan cannot read are reported, never deleted by it.
    std::fs::write(d.path().join("queue/00000000000000001.msg"), b"no envelope").unwrap();
    let (_, bad) = spool.scan().unwrap();
    assert_eq!(bad.len(), 1);
    assert!(d.path().join("queue/00000000000000001.msg").exists());
    drop(spool);
    assert!(!Spool::is_in_use(d.path()));
}

#[tokio::test]
async fn large_messages_spill_to_disk_and_commit_whole() {
    let d = tempfile::tempdir().unwrap();
    let spool = Spool::open(d.path()).unwrap();
    // Odd-sized pieces across several spills, then a small tail kept in memory.
    let data: Vec<u8> = (0..(3 * SPILL + 12_345)).map(|i| (i % 251) as u8).collect();
    let mut inc = spool.incoming().await.unwrap();
    for piece in data.chunks(65_521) {
        inc.write(piece).await.unwrap();
    }
    let tmp = d.path().join("tmp").join(format!("{}.msg", inc.id()));
    assert!(tmp.exists(), "spilled to its data file in tmp/");
    let c = inc.commit(env()).await.unwrap();
    assert_eq!(message(&spool, c.id()), data);

    // An abandoned large reception leaves no data file behind.
    let mut inc = spool.incoming().await.unwrap();
    inc.write(&data).await.unwrap();
    let path = d.path().join("tmp").join(format!("{}.msg", inc.id()));
    assert!(path.exists());
    drop(inc);
    assert!(!path.exists());
}

#[test]
fn dir_sync_groups_concurrent_callers_and_never_skips_one() {
    let d = tempfile::tempdir().unwrap();
    let sync = std::sync::Arc::new(DirSync::default());
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let (sync, dir) = (sync.clone(), d.path().to_path_buf());
            std::thread::spawn(move || {
                for _ in 0..50 {
                    sync.sync(&dir).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Every ticket is covered by a completed sync.
    let requested = sync.requested.load(Ordering::SeqCst);
    assert_eq!(requested, 800);
    assert_eq!(sync.completed.load(Ordering::SeqCst), requested);
    // A missing directory is an error for the caller, and is not counted as synced.
    let gone = d.path().join("gone");
    assert!(sync.sync(&gone).is_err());
    assert_eq!(sync.completed.load(Ordering::SeqCst), requested);
}

#[tokio::test]
async fn a_rewritten_envelope_wins_and_orphans_are_cleaned_at_start() {
    let d = tempfile::tempdir().unwrap();
    let spool = Spool::open(d.path()).unwrap();
    let c = spool.inject(env(), b"hello").await.unwrap();
    let mut e = spool.load(c.id()).unwrap();
    e.attempts = 3;
    spool.update(&e).unwrap();
    assert_eq!(spool.load(c.id()).unwrap().attempts, 3, ".env supersedes");
    assert_eq!(message(&spool, c.id()), b"hello");
    // A removal interrupted after the data file went: the .env alone is not a message.
    let gone = spool.inject(env(), b"bye").await.unwrap();
    spool.update(&spool.load(gone.id()).unwrap()).unwrap();
    std::fs::remove_file(spool.msg_path(gone.id())).unwrap();
    assert!(!spool.exists(gone.id()));
    let (envs, bad) = spool.scan().unwrap();
    assert_eq!((envs.len(), bad.len()), (1, 0));
    // An earlier version's message (bare data file + .env) is still read.
    let old = "0000000000000ABCD";
    std::fs::write(d.path().join(format!("queue/{old}.msg")), b"old body").unwrap();
    let mut oe = env();
    oe.id = old.into();
    oe.size = 8;
    std::fs::write(
        d.path().join(format!("queue/{old}.env")),
        serde_json::to_vec(&oe).unwrap(),
    )
    .unwrap();
    assert_eq!(spool.load(old).unwrap().size, 8);
    drop(spool);
    let spool = Spool::open(d.path()).unwrap();
    assert!(!d.path().join(format!("queue/{}.env", gone.id())).exists());
    let (envs, _) = spool.scan().unwrap();
    let ids: Vec<&str> = envs.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [old, c.id()]);
    spool.remove(c.id()).unwrap();
    assert!(!d.path().join(format!("queue/{}.env", c.id())).exists());
    assert!(matches!(spool.remove(c.id()), Err(SpoolError::NotFound(_))));
}

#[tokio::test]
async fn delivered_removal_leaves_the_fsync_to_sync_pending() {
    let d = tempfile::tempdir().unwrap();
    let spool = Spool::open(d.path()).unwrap();
    let c = spool.inject(env(), b"x").await.unwrap();
    let before = spool.dir_sync.requested.load(Ordering::SeqCst);
    spool.remove_delivered(c.id()).unwrap();
    assert!(!spool.exists(c.id()));
    assert_eq!(
        spool.dir_sync.requested.load(Ordering::SeqCst),
        before,
        "no fsync yet"
    );
    assert!(spool.dir_sync.pending.load(Ordering::SeqCst));
    spool.sync_pending().unwrap();
    assert!(!spool.dir_sync.pending.load(Ordering::SeqCst));
    assert_eq!(spool.dir_sync.completed.load(Ordering::SeqCst), before + 1);
    spool.sync_pending().unwrap();
    assert_eq!(
        spool.dir_sync.requested.load(Ordering::SeqCst),
        before + 1,
        "nothing pending"
    );
    assert!(matches!(
        spool.remove_delivered(c.id()),
        Err(SpoolError::NotFound(_))
    ));
}

#[tokio::test]
async fn start_up_keeps_committed_messages_it_cannot_read() {
    let d = tempfile::tempdir().unwrap();
    let spool = files_only(&d);
    let c = spool.inject(env(), b"kept").await.unwrap();
    // An envelope of a version this binary does not know, embedded with a valid trailer.
    let mut future = serde_json::to_value(spool.load(c.id()).unwrap()).unwrap();
    future["version"] = serde_json::json!(99);
    let json = serde_json::to_vec(&future).unwrap();
    let mut file = b"kept".to_vec();
    file.extend_from_slice(&embedded(&json));
    std::fs::write(spool.msg_path(c.id()), &file).unwrap();
    assert!(spool.load(c.id()).is_err());
    drop(spool);
    let spool = Spool::open(d.path()).unwrap();
    assert!(
        spool.msg_path(c.id()).exists(),
        "acknowledged mail is never deleted"
    );
    let (_, bad) = spool.scan().unwrap();
    assert_eq!(bad.len(), 1, "and it is reported");
}

#[tokio::test]
async fn retry_requests_are_markers_the_relay_consumes() {
    let d = tempfile::tempdir().unwrap();
    let spool = files_only(&d);
    let c = spool.inject(env(), b"x").await.unwrap();
    let before = std::fs::read(spool.msg_path(c.id())).unwrap();
    // An operator command (another process) asks; the envelope is not rewritten.
    let op = Spool::attach(d.path()).unwrap();
    op.request_retry(c.id()).unwrap();
    assert!(matches!(
        op.request_retry("0000000000000FFFF"),
        Err(SpoolError::NotFound(_))
    ));
    assert_eq!(std::fs::read(spool.msg_path(c.id())).unwrap(), before);
    assert!(!d.path().join(format!("queue/{}.env", c.id())).exists());
    let (envs, bad) = spool.scan().unwrap();
    assert_eq!((envs.len(), bad.len()), (1, 0), "markers are not messages");
    assert_eq!(spool.take_retry_requests(), [c.id().to_string()]);
    assert!(spool.take_retry_requests().is_empty(), "consumed once");
    // A marker whose message went is cleaned at start; removal takes its marker along.
    op.request_retry(c.id()).unwrap();
    spool.remove(c.id()).unwrap();
    assert!(!d.path().join(format!("queue/{}.retry", c.id())).exists());
    std::fs::write(d.path().join("queue/0000000000000AAAA.retry"), b"").unwrap();
    drop(spool);
    let spool = Spool::open(d.path()).unwrap();
    assert!(!d.path().join("queue/0000000000000AAAA.retry").exists());
    assert!(spool.take_retry_requests().is_empty());
}

/// Names in `queue/` with this extension.
fn queue_files(d: &tempfile::TempDir, ext: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(d.path().join("queue"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(&format!(".{ext}")))
        .collect();
    names.sort();
    names
}

async fn put(spool: &Spool, text: &str) -> String {
    let mut inc = spool.incoming().await.unwrap();
    inc.write(text.as_bytes()).await.unwrap();
    inc.commit(env()).await.unwrap().id().to_string()
}

/// Writes `queue/ID.msg` as a move out leaves it: `body`, then `env` embedded.
fn write_own_file(spool: &Spool, env: &Envelope, body: &[u8]) {
    let mut file = body.to_vec();
    file.extend_from_slice(&embedded(&serde_json::to_vec(env).unwrap()));
    std::fs::write(spool.msg_path(&env.id), file).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn small_messages_share_a_segment_and_survive_a_restart() {
    let d = tempfile::tempdir().unwrap();
    let spool = Spool::open(d.path()).unwrap();
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let s = spool.clone();
            tokio::spawn(async move {
                (
                    i,
                    put(&s, &format!("Subject: {i}\r\n\r\nbody {i}\r\n")).await,
                )
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    assert_eq!(queue_files(&d, "seg").len(), 1);
    assert!(queue_files(&d, "msg").is_empty(), "no file per message");
    for (i, id) in &ids {
        assert!(spool.exists(id));
        assert_eq!(
            message(&spool, id),
            format!("Subject: {i}\r\n\r\nbody {i}\r\n").as_bytes()
        );
    }
    drop(spool);
    let spool = Spool::open(d.path()).unwrap();
    let (envs, bad) = spool.scan().unwrap();
    assert_eq!((envs.len(), bad.len()), (40, 0));
    for (i, id) in &ids {
        assert_eq!(
            message(&spool, id),
            format!("Subject: {i}\r\n\r\nbody {i}\r\n").as_bytes()
        );
    }
    // New messages go to a new segment; the old one is sealed.
    put(&spool, "later").await;
    assert_eq!(queue_files(&d, "seg").len(), 2);
}

#[tokio::test]
async fn delivered_messages_stay_gone_and_an_emptied_sealed_segment_is_deleted() {
    let d = tempfile::tempdir().unwrap();
    let spool = Spool::open(d.path()).unwrap();
    let a = put(&spool, "a").await;
    let b = put(&spool, "b").await;
    let c = put(&spool, "c").await;
    spool.remove_delivered(&a).unwrap();
    assert!(!spool.exists(&a));
    assert!(matches!(spool.load(&a), Err(SpoolError::NotFound(_))));
    assert!(matches!(
        spool.remove_delivered(&a),
        Err(SpoolError::NotFound(_))
    ));
    spool.sync_pending().unwrap();
    assert_eq!(queue_files(&d, "done").len(), 1);
    drop(spool);
    // After a restart the removal holds; the segment is sealed.
    let spool = Spool::open(d.path()).unwrap();
    let (envs, _) = spool.scan().unwrap();
    let left: Vec<&str> = envs.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(left, [b.as_str(), c.as_str()]);
    spool.remove_delivered(&b).unwrap();
    assert_eq!(queue_files(&d, "seg").len(), 1);
    spool.remove(&c).unwrap();
    assert!(
        queue_files(&d, "seg").is_empty(),
        "sealed and empty: deleted"
    );
    assert!(queue_files(&d, "done").is_empty());
    drop(spool);
    let spool = Spool::open(d.path()).unwrap();
    assert!(spool.scan().unwrap().0.is_empty());
}

#[tokio::test]
async fn an_updated_message_moves_to_a_file_of_its_own() {
    let d = tempfile::tempdir().unwrap();
    let spool = Spool::open(d.path()).unwrap();
    let id = put(&spool, "deferred body").await;
    let mut e = spool.load(&id).unwrap();
    e.attempts = 2;
    spool.update(&e).unwrap();
    assert!(d.path().join(format!("queue/{id}.msg")).exists());
    assert_eq!(spool.load(&id).unwrap().attempts, 2);
    assert_eq!(message(&spool, &id), b"deferred body");
    assert_eq!(spool.scan().unwrap().0.len(), 1, "not twice");
    e.attempts = 3;
    spool.update(&e).unwrap();
    assert_eq!(spool.load(&id).unwrap().attempts, 3);
    drop(spool);
    let spool = Spool::open(d.path()).unwrap();
    let (envs, _) = spool.scan().unwrap();
    assert_eq!(envs.len(), 1);
    assert_eq!(envs[0].attempts, 3);
    assert!(
        queue_files(&d, "seg").is_empty(),
        "nothing live was left in it"
    );
    assert_eq!(message(&spool, &id), b"deferred body");
}

#[tokio::test]
async fn a_move_interrupted_before_its_tombstone_leaves_the_message_file_winning() {
    let d = tempfile::tempdir().unwrap();
    let spool = Spool::open(d.path()).unwrap();
    let id = put(&spool, "body").await;
    // What a crash after the rename and before the tombstone leaves: both copies.
    let mut e = spool.load(&id).unwrap();
    e.attempts = 5;
    write_own_file(&spool, &e, b"body");
    drop(spool);
    let spool = Spool::open(d.path()).unwrap();
    let (envs, bad) = spool.scan().unwrap();
    assert_eq!((envs.len(), bad.len()), (1, 0));
    assert_eq!(envs[0].attempts, 5);
    assert!(queue_files(&d, "seg").is_empty());
}

#[tokio::test]
async fn a_torn_append_is_not_a_message_and_the_segment_is_set_aside_when_done() {
    let d = tempfile::tempdir().unwrap();
    let spool = Spool::open(d.path()).unwrap();
    let a = put(&spool, "first").await;
    let b = put(&spool, "second").await;
    drop(spool);
    // A crash in the middle of a third append (never acknowledged).
    let seg = d.path().join("queue").join(&queue_files(&d, "seg")[0]);
    let mut e = env();
    e.id = "0000000000000000C".into();
    e.size = 5;
    let rec = segment::record(&e.id, b"third", &serde_json::to_vec(&e).unwrap());
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&rec[..rec.len() / 2]).unwrap();
    drop(f);
    let spool = Spool::open(d.path()).unwrap();
    let (envs, _) = spool.scan().unwrap();
    let ids: Vec<&str> = envs.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [a.as_str(), b.as_str()]);
    assert_eq!(message(&spool, &b), b"second");
    spool.remove_delivered(&a).unwrap();
    spool.remove_delivered(&b).unwrap();
    assert!(queue_files(&d, "seg").is_empty());
    assert_eq!(
        std::fs::read_dir(d.path().join("corrupt")).unwrap().count(),
        1,
        "kept for a look"
    );
}

#[tokio::test]
async fn an_operator_removal_reaches_the_relay_at_its_next_scan() {
    let d = tempfile::tempdir().unwrap();
    let spool = Spool::open(d.path()).unwrap();
    let id = put(&spool, "x").await;
    let keep = put(&spool, "y").await;
    let op = Spool::attach(d.path()).unwrap();
    assert_eq!(
        op.scan().unwrap().0.len(),
        2,
        "commands see segment messages"
    );
    assert_eq!(op.message(&keep).read(1).unwrap(), b"y");
    op.remove(&id).unwrap();
    assert!(!op.exists(&id));
    let (envs, _) = spool.scan().unwrap();
    assert_eq!(envs.len(), 1);
    assert!(!spool.exists(&id));
    assert!(spool.exists(&keep));
    drop(spool);
    let spool = Spool::open(d.path()).unwrap();
    assert_eq!(spool.scan().unwrap().0.len(), 1);
}

#[tokio::test]
async fn large_messages_and_the_files_only_layout_keep_a_file_per_message() {
    let d = tempfile::tempdir().unwrap();
    let spool = Spool::open(d.path()).unwrap();
    let big = "x".repeat(SPILL + 10);
    let id = put(&spool, &big).await;
    assert!(d.path().join(format!("queue/{id}.msg")).exists());
    assert!(queue_files(&d, "seg").is_empty());
    drop(spool);
    let spool = files_only(&d);
    let small = put(&spool, "small").await;
    assert!(d.path().join(format!("queue/{small}.msg")).exists());
    assert!(queue_files(&d, "seg").is_empty());
}

#[tokio::test]
async fn an_operator_delete_is_not_undone_by_the_relays_next_envelope_update() {
    let d = tempfile::tempdir().unwrap();
    let spool = Spool::open(d.path()).unwrap();
    let id = put(&spool, "to be deleted").await;
    let mut e = spool.load(&id).unwrap(); // an attempt under way
    let op = Spool::attach(d.path()).unwrap();
    op.remove(&id).unwrap();
    e.attempts = 1;
    // The deferral's save: the relay has not rescanned yet.
    assert!(matches!(spool.update(&e), Err(SpoolError::NotFound(_))));
    assert!(spool.scan().unwrap().0.is_empty());
    assert!(!d.path().join(format!("queue/{id}.msg")).exists());
    // The same for a message with a file of its own.
    let id = put(&spool, "deferred").await;
    e.id = id.clone();
    spool.update(&e).unwrap();
    let op = Spool::attach(d.path()).unwrap();
    op.remove(&id).unwrap();
    assert!(matches!(spool.update(&e), Err(SpoolError::NotFound(_))));
    assert!(!d.path().join(format!("queue/{id}.env")).exists());
}

#[tokio::test]
async fn a_message_delivered_after_an_interrupted_move_out_stays_delivered() {
    let d = tempfile::tempdir().unwrap();
    let spool = Spool::open(d.path()).unwrap();
    let id = put(&spool, "body").await;
    let other = put(&spool, "keeps the segment").await;
    let mut e = spool.load(&id).unwrap();
    e.attempts = 5;
    // A crash after the move's rename, before its tombstone.
    write_own_file(&spool, &e, b"body");
    drop(spool);
    let spool = Spool::open(d.path()).unwrap();
    assert_eq!(spool.scan().unwrap().0.len(), 2);
    spool.remove_delivered(&id).unwrap();
    spool.sync_pending().unwrap();
    drop(spool);
    let spool = Spool::open(d.path()).unwrap();
    let ids: Vec<String> = spool.scan().unwrap().0.into_iter().map(|e| e.id).collect();
    assert_eq!(ids, [other], "{id} was delivered already");
}

#[tokio::test]
async fn a_segment_deleted_while_a_command_attaches_is_skipped() {
    let d = tempfile::tempdir().unwrap();
    let spool = Spool::open(d.path()).unwrap();
    put(&spool, "x").await;
    // Listed, then gone before it is opened (a dangling name stands for the race).
    std::os::unix::fs::symlink(
        d.path().join("queue/gone"),
        d.path().join("queue/0000000000000000.seg"),
    )
    .unwrap();
    let op = Spool::attach(d.path()).unwrap();
    assert_eq!(op.scan().unwrap().0.len(), 1);
}

#[test]
fn a_stray_file_name_does_not_stop_the_relay() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("queue")).unwrap();
    std::fs::write(d.path().join("queue/00000000000000ff.seg"), b"").unwrap();
    std::fs::write(d.path().join("queue/FFFFFFFFFFFFFFFF.seg"), b"").unwrap();
    assert!(Spool::open(d.path()).is_ok());
}

#[tokio::test]
async fn an_operator_delete_during_a_move_out_is_not_undone() {
    let d = tempfile::tempdir().unwrap();
    let spool = Spool::open(d.path()).unwrap();
    let id = put(&spool, "to be deleted").await;
    let mut e = spool.load(&id).unwrap();
    e.attempts = 1;
    let entry = spool.segs.get(&id).unwrap();
    // `update` checked: not deleted. Then the operator deletes before the rename.
    assert!(!spool.segs.removed_by_command(&id));
    let op = Spool::attach(d.path()).unwrap();
    op.remove(&id).unwrap();
    let r = spool.move_out(&e, &entry);
    assert!(matches!(r, Err(SpoolError::NotFound(_))), "{r:?}");
    spool.sync_pending().unwrap();
    assert!(!spool.scan().unwrap().0.iter().any(|x| x.id == id));
    assert!(!d.path().join(format!("queue/{id}.msg")).exists());
}

#[tokio::test]
async fn a_delivered_message_is_not_queued_again_after_a_move_out_failed_halfway() {
    let d = tempfile::tempdir().unwrap();
    let spool = Spool::open(d.path()).unwrap();
    let id = put(&spool, "body").await;
    let mut e = spool.load(&id).unwrap();
    e.attempts = 1;
    // What a move out leaves when the directory fsync after its rename fails.
    write_own_file(&spool, &e, b"body");
    lock_set(&spool.beside).insert(id.clone());
    assert!(spool.segs.contains(&id));
    spool.remove_delivered(&id).unwrap();
    spool.sync_pending().unwrap();
    let ids: Vec<String> = spool.scan().unwrap().0.into_iter().map(|e| e.id).collect();
    assert!(!ids.contains(&id), "delivered, then queued again: {ids:?}");
}
