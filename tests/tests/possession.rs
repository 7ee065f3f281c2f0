//! Possession, not knowledge: a content hash is not a secret (every visit record carries it),
//! so naming one must grant nothing. A coordinator of another village who names a colleague's
//! photo (its hash and size) in a visit of his own can neither fetch it nor learn that the
//! server holds it; a phone that really holds the same bytes proves it and is served without
//! sending them again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use zoufang_core::media::PhotoLimits;
use zoufang_core::protocol::audit::HashAlgorithm;
use zoufang_core::protocol::messages::{
    self, AttachmentStatusRequest, AttachmentStatusResponse, CatalogRequest, CatalogResponse,
    Change, ChangeOp, ChunkResponse, ContentRef, ContentStatus, Outcome, PROTOCOL_VERSION, Role,
};
use zoufang_core::protocol::possession::ContentProof;
use zoufang_core::records::Attachment;
use zoufang_tests::{Device, TestServer, noisy_jpeg, send_as, survey_with_photo};

const VILLAGE: &str = "513431104201";
/// Another village of the same township.
const OTHER_VILLAGE: &str = "513431104202";

fn auth_of(phone: &Device) -> zoufang_server::DeviceAuth {
    let status = phone.collector.sync_status().unwrap();
    zoufang_server::DeviceAuth::new(status.device_id.unwrap(), status.user.unwrap())
}

/// `liar` pushes a visit in its own village naming `photo` (hash and size), as a tampered app
/// would, copying the record of a visit it saw.
fn name_in_own_visit(
    server: &TestServer,
    liar: &Device,
    record: &messages::VisitRecord,
    photo: &Attachment,
    village: &str,
) {
    let mut lie = record.clone();
    lie.id = uuid::Uuid::now_v7().to_string();
    lie.household_id = None;
    lie.village_code = village.into();
    lie.author = auth_of(liar).user.id;
    lie.answers.insert("village_code".into(), village.into());
    lie.attachments
        .retain(|a| a.content_hash == photo.content_hash);
    lie.attachments[0].id = uuid::Uuid::now_v7().to_string();
    let now = chrono::Utc::now();
    let change = Change {
        seq: 1,
        hlc: "001764300000000-0000000000".into(),
        device_time: "2026-11-28T02:10:00.000Z".into(),
        op: ChangeOp::SubmitVisit {
            visit: Box::new(lie),
        },
    };
    let acks = server
        .storage
        .push(&auth_of(liar), &[change], now, now)
        .unwrap();
    assert_eq!(acks[0].outcome, Outcome::Applied, "{:?}", acks[0]);
}

fn nonce_of(server: &TestServer, phone: &Device) -> String {
    let body = messages::encode(&CatalogRequest {
        protocol: PROTOCOL_VERSION,
        forms: vec![],
        code_lists: Default::default(),
        audit: None,
    })
    .unwrap();
    let answer = send_as(server, phone, "POST", "/v1/catalog", body);
    assert_eq!(answer.status, 200);
    let catalog: CatalogResponse = messages::decode(&answer.body).unwrap();
    catalog.possession_nonce.expect("a possession challenge")
}

fn status(
    server: &TestServer,
    phone: &Device,
    asked: ContentRef,
    nonce: Option<String>,
) -> (ContentStatus, u64) {
    let body = messages::encode(&AttachmentStatusRequest {
        protocol: PROTOCOL_VERSION,
        hash_algorithm: HashAlgorithm::Sha256,
        contents: vec![asked],
        possession_nonce: nonce,
    })
    .unwrap();
    let answer = send_as(server, phone, "POST", "/v1/attachments/status", body);
    assert_eq!(answer.status, 200);
    let states: AttachmentStatusResponse = messages::decode(&answer.body).unwrap();
    (states.contents[0].status, states.contents[0].received)
}

fn fetch_status(server: &TestServer, phone: &Device, hash: &str) -> u16 {
    send_as(
        server,
        phone,
        "GET",
        &format!("/v1/attachments/sha256/{hash}"),
        Vec::new(),
    )
    .status
}

#[test]
fn naming_a_foreign_hash_grants_nothing_and_reveals_nothing() {
    let server = TestServer::start();
    let owner = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let (visit, photo) = survey_with_photo(
        &owner.collector,
        VILLAGE,
        &noisy_jpeg(640, 480, 3),
        &PhotoLimits::default(),
    );
    let report = owner
        .collector
        .sync(&server.transport(), None, None)
        .unwrap();
    assert_eq!(report.attachments_uploaded, 4, "{report:?}");
    let record = owner.collector.visit_submission(&visit).unwrap();

    let thief = Device::enrolled(&server, "coord-b", Role::Coordinator, &[OTHER_VILLAGE]);
    name_in_own_visit(&server, &thief, &record, &photo, OTHER_VILLAGE);
    let named = ContentRef {
        content_hash: photo.content_hash.clone(),
        size_bytes: photo.size_bytes,
        proof: None,
    };
    assert_eq!(fetch_status(&server, &thief, &photo.content_hash), 404);
    // The status of a content the server holds reads exactly like one it never saw.
    assert_eq!(
        status(&server, &thief, named.clone(), None),
        (ContentStatus::Receiving, 0)
    );
    let nonce = nonce_of(&server, &thief);
    for forged in [
        photo.content_hash.clone(),
        ContentProof::of(HashAlgorithm::Sha256, &nonce, b"guess"),
        "zz".into(),
    ] {
        let asked = ContentRef {
            proof: Some(forged),
            ..named.clone()
        };
        assert_eq!(
            status(&server, &thief, asked, Some(nonce.clone())),
            (ContentStatus::Receiving, 0)
        );
    }
    // Someone else's nonce with the right bytes' proof is no use either (nonces are per device).
    let owners_nonce = nonce_of(&server, &owner);
    let bytes = owner
        .collector
        .attachment_content(&photo.content_hash)
        .unwrap();
    let replayed = ContentRef {
        proof: Some(ContentProof::of(
            HashAlgorithm::Sha256,
            &owners_nonce,
            &bytes,
        )),
        ..named.clone()
    };
    assert_eq!(
        status(&server, &thief, replayed, Some(owners_nonce)),
        (ContentStatus::Receiving, 0)
    );
    // One byte sent does not complete the content for the thief: it would have to send them all.
    let chunk = zoufang_core::protocol::frames::encode_frames(&bytes[..1]);
    let path = format!(
        "/v1/attachments/sha256/{}?offset=0&size={}",
        photo.content_hash, photo.size_bytes
    );
    let mut req = zoufang_core::sync::HttpRequest {
        method: "PUT".into(),
        path,
        headers: vec![],
        body: chunk,
    };
    req.headers.push((
        "Content-Type".into(),
        zoufang_core::protocol::frames::CONTENT_TYPE.into(),
    ));
    let answer = send_as(&server, &thief, &req.method, &req.path, req.body.clone());
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let chunk: ChunkResponse = messages::decode(&answer.body).unwrap();
    assert_eq!((chunk.received, chunk.complete), (1, false));
    assert_eq!(fetch_status(&server, &thief, &photo.content_hash), 404);
    // Nor does a reviewer of the thief's village get it through the thief's visit.
    let reviewer = Device::enrolled(&server, "reviewer-b", Role::TownshipStaff, &[OTHER_VILLAGE]);
    assert_eq!(fetch_status(&server, &reviewer, &photo.content_hash), 404);
    // The owner's village still sees it.
    let colleague = Device::enrolled(&server, "coord-a2", Role::Coordinator, &[VILLAGE]);
    assert_eq!(fetch_status(&server, &colleague, &photo.content_hash), 200);
}

#[test]
fn a_phone_that_holds_the_bytes_proves_it_and_is_served_without_sending_them() {
    let server = TestServer::start();
    let a = Device::enrolled(&server, "coord-a", Role::Coordinator, &[VILLAGE]);
    let b = Device::enrolled(&server, "coord-b", Role::Coordinator, &[OTHER_VILLAGE]);
    // The same certificate photographed into the same file, in two villages.
    let document = noisy_jpeg(900, 700, 11);
    let (_, on_a) = survey_with_photo(&a.collector, VILLAGE, &document, &PhotoLimits::default());
    let (_, on_b) = survey_with_photo(
        &b.collector,
        OTHER_VILLAGE,
        &document,
        &PhotoLimits::default(),
    );
    assert_eq!(on_a.content_hash, on_b.content_hash);
    a.collector.sync(&server.transport(), None, None).unwrap();
    let report = b.collector.sync(&server.transport(), None, None).unwrap();
    assert!(report.attachments_already_held >= 1, "{report:?}");
    assert!(report.attachment_bytes_sent < on_b.size_bytes, "{report:?}");
    // Proven: B's village (B, and its reviewers) may read it through B's visit.
    let reviewer = Device::enrolled(&server, "reviewer-b", Role::TownshipStaff, &[OTHER_VILLAGE]);
    assert_eq!(fetch_status(&server, &reviewer, &on_b.content_hash), 200);
    assert!(
        b.collector
            .visits_with_pending_attachments()
            .unwrap()
            .is_empty()
    );
}
