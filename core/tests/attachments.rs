//! Photos and signatures in a draft: prepared, stored content-addressed inside the store in one
//! transaction with their answer, shared when identical, deleted when nothing names them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Cursor;

use serde_json::json;
use zoufang_core::media::PhotoLimits;
use zoufang_core::records::VisitStatus;
use zoufang_core::{Collector, StoreOptions};

fn camera_jpeg(w: u32, h: u32, shade: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x / 7) as u8 ^ shade, (y / 5) as u8, ((x + y) / 9) as u8])
    });
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&img)
        .unwrap();
    jpeg
}

fn signature_png() -> Vec<u8> {
    let strokes = image::GrayAlphaImage::from_fn(500, 160, |x, y| {
        image::LumaA([0, if (x + 2 * y) % 13 == 0 { 255 } else { 0 }])
    });
    let mut png = Vec::new();
    strokes
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png
}

fn blob_count(path: &std::path::Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("SELECT count(*) FROM blobs", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn photos_are_stored_with_their_answer_shared_when_identical_and_collected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let c = Collector::open(&path, &StoreOptions::default()).unwrap();
    c.sign_in("coord-1").unwrap();
    let v = c.start_visit(None, "application_survey").unwrap();
    let house = camera_jpeg(2400, 1800, 0);
    let limits = PhotoLimits::default();

    let outside = c
        .add_photo(&v.id, "house_exterior_photo", &house, &limits)
        .unwrap();
    assert_eq!(outside.mime_type, "image/jpeg");
    assert_eq!(
        (
            outside.metadata["width"].clone(),
            outside.metadata["height"].clone()
        ),
        (json!(1600), json!(1200))
    );
    let stored = c.attachment_content(&outside.content_hash).unwrap();
    assert_eq!(stored.len() as u64, outside.size_bytes);
    assert_eq!(
        c.content_hash(&stored),
        outside.content_hash,
        "content-addressed"
    );
    assert_eq!(
        c.visit(&v.id).unwrap().answers["house_exterior_photo"],
        json!(outside.id)
    );

    // The same picture in a second field: a second attachment, one stored content.
    let inside = c
        .add_photo(&v.id, "house_interior_photo", &house, &limits)
        .unwrap();
    assert_eq!(inside.content_hash, outside.content_hash);
    assert_eq!(blob_count(&path), 1);

    // Replacing the outside photo keeps the shared content (inside still names it)...
    let other = c
        .add_photo(
            &v.id,
            "house_exterior_photo",
            &camera_jpeg(1200, 900, 77),
            &limits,
        )
        .unwrap();
    assert_eq!(blob_count(&path), 2);
    assert_eq!(c.attachments_of_visit(&v.id).unwrap().len(), 2);
    // ...and removing the last attachment naming a content deletes it.
    c.remove_attachment(&v.id, &inside.id).unwrap();
    assert_eq!(blob_count(&path), 1);
    assert_eq!(
        c.attachment_content(&outside.content_hash)
            .unwrap_err()
            .code(),
        "not_found"
    );
    assert!(
        c.visit(&v.id)
            .unwrap()
            .answers
            .get("house_interior_photo")
            .is_none_or(|a| a.is_null())
    );
    c.remove_attachment(&v.id, &other.id).unwrap();
    assert_eq!(blob_count(&path), 0);

    let sig = c
        .add_signature(&v.id, "investigator_1_signature", &signature_png())
        .unwrap();
    assert_eq!(sig.mime_type, "image/png");
    // A photo is refused for a signature field and vice versa, and garbage is a typed error.
    assert_eq!(
        c.add_photo(&v.id, "investigator_2_signature", &house, &limits)
            .unwrap_err()
            .code(),
        "invalid_value"
    );
    let err = c
        .add_photo(&v.id, "house_exterior_photo", b"not a photo", &limits)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            zoufang_core::Error::InvalidValue {
                code: "image_unreadable",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        blob_count(&path),
        1,
        "a refused photo leaves nothing behind"
    );
}

#[test]
fn an_encrypted_store_keeps_photos_encrypted_and_hashes_with_its_suite() {
    let dir = tempfile::tempdir().unwrap();
    let key = "3f1c2a9d8e7b6a5f4e3d2c1b0a99887766554433221100ffeeddccbbaa998877";
    for cipher in [zoufang_core::Cipher::Aes256, zoufang_core::Cipher::Sm4] {
        let path = dir.path().join(format!("{cipher:?}.db"));
        let options = StoreOptions {
            encryption_key: Some(key.into()),
            cipher,
        };
        if !cfg!(feature = "sqlcipher") {
            assert_eq!(
                Collector::open(&path, &options).unwrap_err().code(),
                "encryption_unavailable"
            );
            continue;
        }
        let c = Collector::open(&path, &options).unwrap();
        c.sign_in("coord-1").unwrap();
        let v = c.start_visit(None, "application_survey").unwrap();
        let a = c
            .add_photo(
                &v.id,
                "house_exterior_photo",
                &camera_jpeg(800, 600, 5),
                &PhotoLimits::default(),
            )
            .unwrap();
        let bytes = c.attachment_content(&a.content_hash).unwrap();
        // The JPEG's own markers never reach the disk in clear.
        let on_disk: Vec<u8> = std::fs::read_dir(dir.path())
            .unwrap()
            .flat_map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect();
        let marker = &bytes[..64];
        assert!(
            !on_disk.windows(marker.len()).any(|w| w == marker),
            "{cipher:?}"
        );
        let sha256_len = 64;
        assert_eq!(a.content_hash.len(), sha256_len);
        let sm3_expected = cipher == zoufang_core::Cipher::Sm4;
        use sha2_check::digest_hex;
        assert_eq!(
            a.content_hash == digest_hex(&bytes),
            !sm3_expected,
            "{cipher:?}: SHA-256 unless SM4"
        );
    }
}

mod sha2_check {
    pub fn digest_hex(bytes: &[u8]) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(bytes))
    }
}

#[test]
fn a_signature_goes_stale_when_the_visit_changes_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::open(&dir.path().join("s.db"), &StoreOptions::default()).unwrap();
    c.sign_in("coord-1").unwrap();
    let v = c.start_visit(None, "application_survey").unwrap();
    c.set_answer(&v.id, "interviewee_name", json!("吉克阿呷"))
        .unwrap();
    c.add_photo(
        &v.id,
        "house_exterior_photo",
        &camera_jpeg(640, 480, 1),
        &PhotoLimits::default(),
    )
    .unwrap();
    let sig = c
        .add_signature(&v.id, "investigator_1_signature", &signature_png())
        .unwrap();
    let stale = |c: &Collector| -> Vec<String> {
        c.validate_visit(&v.id)
            .unwrap()
            .into_iter()
            .filter(|p| p.code == "signature_stale")
            .map(|p| p.path)
            .collect()
    };
    assert!(c.signatures(&v.id).unwrap()[0].valid);
    assert!(stale(&c).is_empty());
    // A second signature does not invalidate the first: signatures are not what is signed.
    c.add_signature(&v.id, "investigator_2_signature", &signature_png())
        .unwrap();
    assert!(c.signatures(&v.id).unwrap().iter().all(|s| s.valid));

    // An answer changes after signing: both signatures go stale, visibly, and block completion.
    c.set_answer(&v.id, "interviewee_name", json!("阿苏拉则"))
        .unwrap();
    assert!(c.signatures(&v.id).unwrap().iter().all(|s| !s.valid));
    assert_eq!(
        stale(&c),
        ["investigator_1_signature", "investigator_2_signature"]
    );
    // Re-signing binds to the new content.
    let again = c
        .add_signature(&v.id, "investigator_1_signature", &signature_png())
        .unwrap();
    assert_ne!(again.id, sig.id);
    assert_eq!(stale(&c), ["investigator_2_signature"]);
    // Replacing a photo changes the content too.
    c.add_signature(&v.id, "investigator_2_signature", &signature_png())
        .unwrap();
    assert!(stale(&c).is_empty());
    c.add_photo(
        &v.id,
        "house_exterior_photo",
        &camera_jpeg(640, 480, 99),
        &PhotoLimits::default(),
    )
    .unwrap();
    assert_eq!(stale(&c).len(), 2);
}

#[test]
fn completing_a_visit_keeps_its_signatures_valid() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::open(&dir.path().join("s.db"), &StoreOptions::default()).unwrap();
    c.sign_in("coord-1").unwrap();
    let v = c.start_visit(None, "routine").unwrap();
    let answers = json!({
        "village_code": "513431104201", "urban_rural": "rural",
        "trigger_source": "schedule", "outcome": "completed", "interviewee_name": "吉克阿呷",
        "location_missing_reason": "no_signal", "basic_living_difficulty": "no", "risk_level": "low",
        "recommendation": "monitor", "emergency": "no", "next_visit_due": "2027-03-01",
        "investigator_1_name": "马海木呷", "consent_privacy": "yes"
    });
    c.set_answers(&v.id, answers.as_object().unwrap()).unwrap();
    c.add_signature(&v.id, "investigator_1_signature", &signature_png())
        .unwrap();
    c.complete_visit(&v.id).unwrap();
    let states = c.signatures(&v.id).unwrap();
    assert_eq!(states.len(), 1);
    assert!(
        states[0].valid,
        "completion (end time, calculated values, defaults) is not a change"
    );
    // Holding its signature, the completed visit can be marked signed, once.
    c.sign_visit(&v.id).unwrap();
    assert_eq!(c.visit(&v.id).unwrap().status, VisitStatus::Signed);
    assert_eq!(
        c.sign_visit(&v.id).unwrap_err().code(),
        "visit_wrong_status"
    );
}

#[test]
fn an_attachment_its_answers_no_longer_name_leaves_the_draft() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let c = Collector::open(&path, &StoreOptions::default()).unwrap();
    c.sign_in("coord-1").unwrap();
    let v = c.start_visit(None, "application_survey").unwrap();
    // A participant signs, then the participant is removed from the list.
    c.set_answer(
        &v.id,
        "other_participants[0].participant_name",
        json!("沙马"),
    )
    .unwrap();
    let participant = c
        .add_signature(
            &v.id,
            "other_participants[0].participant_signature",
            &signature_png(),
        )
        .unwrap();
    // A photo taken, then its answer cleared by hand.
    let photo = c
        .add_photo(
            &v.id,
            "house_interior_photo",
            &camera_jpeg(640, 480, 2),
            &PhotoLimits::default(),
        )
        .unwrap();
    let kept = c
        .add_photo(
            &v.id,
            "house_exterior_photo",
            &camera_jpeg(640, 480, 3),
            &PhotoLimits::default(),
        )
        .unwrap();
    assert_eq!(blob_count(&path), 3);
    c.remove_repeat_instance(&v.id, "other_participants[0]")
        .unwrap();
    c.set_answer(&v.id, "house_interior_photo", json!(null))
        .unwrap();
    let left: Vec<String> = c
        .attachments_of_visit(&v.id)
        .unwrap()
        .into_iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(left, [kept.id]);
    assert!(c.attachment_content(&participant.content_hash).is_err());
    assert!(c.attachment_content(&photo.content_hash).is_err());
    assert_eq!(blob_count(&path), 1);
}
