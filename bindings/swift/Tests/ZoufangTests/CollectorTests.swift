import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import XCTest
@testable import Zoufang

let village = "513431104201"

func openStore() throws -> Collector {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("zoufang-swift-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    // Encrypted with a random key, as an app's store is (Keychain-held).
    let key = (0..<32).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
    return try Collector.open(path: dir.appendingPathComponent("store.db").path, protection: .encrypted(key: key, cipher: .aes256))
}

extension Collector {
    func newHousehold(phone: String = "13812345678") throws -> String {
        try addHousehold(
            villageCode: village,
            fieldsJson: #"{"phone": "\#(phone)", "urban_rural": "rural", "address": "三组", "next_visit_due": "2026-12-01"}"#,
            membersJson: [#"{"name": "吉克阿呷", "id_type": "resident_id", "id_number": "11010519491231002X", "relationship": "02", "lives_together": "yes", "health": "healthy"}"#]
        )
    }

    func routineVisit(household: String) throws {
        let v = try startVisit(householdId: household, visitType: "routine")
        try setAnswers(visitId: v.id, answersJson: #"""
            {"trigger_source": "schedule", "outcome": "completed", "interviewee_name": "吉克阿呷",
             "location_missing_reason": "no_signal", "basic_living_difficulty": "no", "risk_level": "low",
             "recommendation": "monitor", "emergency": "no", "next_visit_due": "2027-03-01",
             "investigator_1_name": "马海木呷", "consent_privacy": "yes"}
            """#)
        _ = try completeVisit(visitId: v.id)
    }
}

/// A 64×48 JPEG from a camera.
let cameraJpeg = Data(base64Encoded: "/9j/4AAQSkZJRgABAgAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwgJC4nICIsIxwcKDcpLDAxNDQ0Hyc5PTgyPC4zNDL/2wBDAQkJCQwLDBgNDRgyIRwhMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjL/wAARCAAwAEADASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUFBAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVWV1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAECAxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVmZ2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq8vP09fb3+Pn6/9oADAMBAAIRAxEAPwDw+O19qtx2vtV6O19quR2vtUqZFDElGO19qtx2vtV6O19quR2vtWime1QxJRjtfarcdr7Vejtfarcdr7VqpntUMSUY7X2q5Ha+1Xo7X2q3Ha+1aqZ7dDEnEx2vtVuO19qvR2vtVuO19q8dTPxChiSjHa+1XI7X2q9Ha+1W47X2rVTPaoYkox2vtVyO19qvR2vtVuO19q1Uz2qGJKMdr7Vbjtfar0dr7VcjtfatFM9uhiTiI7X2q5Ha+1Xo7X2q3Ha+1eQpn4hQxJRjtfarcdr7Vejtfarkdr7VqpntUMSUY7X2q3Ha+1Xo7X2q5Ha+1aKZ7VDElGO19qtx2vtV6O19qtx2vtWqme1QxJ//2Q==")!

/// The server `test-swift.sh` started on loopback for this run, with one-time enrolment tokens
/// (Foundation's Process is unreliable inside the build root, so the script administers it).
struct TestServer {
    let url: String
    private let env = ProcessInfo.processInfo.environment

    init() throws {
        guard let url = env["ZOUFANG_SERVER_URL"] else { throw XCTSkip("ZOUFANG_SERVER_URL is not set") }
        self.url = url
    }

    func enrolmentToken(_ user: String) throws -> String {
        guard let token = env["ZOUFANG_TOKEN_\(user.uppercased().replacingOccurrences(of: "-", with: "_"))"] else {
            throw XCTSkip("no enrolment token for \(user)")
        }
        return token
    }
}

final class Progress: SyncListener, @unchecked Sendable {
    private let lock = NSLock()
    private var seen: [SyncProgress] = []
    func onProgress(progress: SyncProgress) {
        lock.lock(); seen.append(progress); lock.unlock()
    }
    var updates: [SyncProgress] { lock.lock(); defer { lock.unlock() }; return seen }
}

/// The app's own HTTP stack carrying the sync (URLSession on iOS).
final class UrlSessionTransport: HttpTransport, @unchecked Sendable {
    let base: String
    private let lock = NSLock()
    private var count = 0
    init(base: String) { self.base = base }
    var requests: Int { lock.lock(); defer { lock.unlock() }; return count }

    func send(request: HttpRequest) throws -> HttpResponse {
        lock.lock(); count += 1; lock.unlock()
        var r = URLRequest(url: URL(string: base + request.path)!)
        r.httpMethod = request.method
        r.httpBody = request.body
        for h in request.headers where !["content-length", "host"].contains(h.name.lowercased()) {
            r.setValue(h.value, forHTTPHeaderField: h.name)
        }
        final class Box: @unchecked Sendable { var response: HttpResponse? }
        let done = DispatchSemaphore(value: 0)
        let box = Box()
        URLSession.shared.dataTask(with: r) { data, response, _ in
            if let http = response as? HTTPURLResponse {
                box.response = HttpResponse(status: UInt16(http.statusCode), body: data ?? Data())
            }
            done.signal()
        }.resume()
        done.wait()
        guard let answer = box.response else {
            throw ZoufangError.Network(code: "transport", detail: "no answer from the server")
        }
        return answer
    }
}

final class CollectorTests: XCTestCase {
    func testFormsHaveChineseAndYiLabels() throws {
        let c = try openStore()
        try c.signIn(userId: "coord-1")
        XCTAssertEqual(c.currentUser(), "coord-1")
        let form = try c.form(formId: nil)
        XCTAssertEqual(form.id, "household_visit")
        XCTAssertTrue(form.titleIi.unicodeScalars.allSatisfy { (0xA000...0xA48F).contains($0.value) })
        XCTAssertTrue(form.definitionJson.contains("\"sections\""))
        XCTAssertTrue(c.codeListsJson().contains("彝族"))
    }

    func testHouseholdsAreAddedFoundShownAndEdited() throws {
        let c = try openStore()
        try c.signIn(userId: "coord-1")
        let h = try c.newHousehold()
        XCTAssertEqual(try c.searchHouseholds(query: "吉克", limit: 10).map(\.id), [h])
        XCTAssertEqual(try c.householdsHoldingIdNumber(idNumber: "11010519491231002x").map(\.id), [h])
        XCTAssertEqual(try c.householdsInVillage(villageCode: village, limit: 50, offset: 0).count, 1)
        // A region code as it enters from the app is checked: an empty or short one is refused.
        for bad in ["", "5134311042"] {
            XCTAssertThrowsError(try c.householdsInVillage(villageCode: bad, limit: 50, offset: 0)) { error in
                guard case let ZoufangError.InvalidInput(code, _) = error else { return XCTFail("\(error)") }
                XCTAssertEqual(code, "invalid_value")
            }
        }
        XCTAssertEqual(try c.householdsDue(onOrBefore: "2026-12-31", villageCode: nil, limit: 50).count, 1)
        try c.editHouseholdField(householdId: h, field: "phone", valueJson: "\"0834-1234567\"")
        let shown = try c.household(id: h)
        XCTAssertEqual(shown.headName, "吉克阿呷")
        XCTAssertTrue(shown.fieldsJson.contains("0834-1234567"))
        XCTAssertThrowsError(try c.editHouseholdField(householdId: h, field: "phone", valueJson: "\"12345\"")) { error in
            guard case let ZoufangError.InvalidInput(code, detail) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(code, "invalid_value")
            XCTAssertFalse(detail.contains("12345"))
        }
        // The family moves away: off the due list and the counts, still found when asked.
        try c.setHouseholdStatus(householdId: h, status: "moved_away", reason: "全家搬到西昌", date: "2026-11-20")
        XCTAssertTrue(try c.householdsDue(onOrBefore: "2026-12-31", villageCode: nil, limit: 50).isEmpty)
        XCTAssertEqual(try c.searchAllHouseholds(query: "吉克", limit: 10).map(\.status), ["moved_away"])
        XCTAssertEqual(try c.counts().householdsInactive, 1)
        try c.setMemberStatus(memberId: shown.members[0].id, status: "deceased", reason: nil, date: nil)
        XCTAssertEqual(try c.household(id: h).formerMembers.count, 1)
    }

    func testAVisitIsCheckedCompletedSignedAndListed() throws {
        let c = try openStore()
        try c.signIn(userId: "coord-1")
        let h = try c.newHousehold()
        let v = try c.startVisit(householdId: h, visitType: "disability_check")
        XCTAssertEqual(v.status, .draft)
        try c.setAnswer(visitId: v.id, path: "outcome", valueJson: "\"completed\"")
        try c.setAnswer(visitId: v.id, path: "members[0].id_number", valueJson: "\"11010519491231002Y\"")
        XCTAssertTrue(try c.fieldStates(visitId: v.id).first { $0.path == "interviewee_name" }!.required)
        let problem = try c.validateVisit(visitId: v.id).first { $0.path == "members[0].id_number" }!
        XCTAssertEqual(problem.code, "resident_id_characters")
        XCTAssertTrue(problem.blocksCompletion)
        XCTAssertThrowsError(try c.completeVisit(visitId: v.id)) { error in
            guard case let ZoufangError.VisitHasProblems(problems, _) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(problems.contains { $0.path == "members[0].id_number" })
        }
        try c.setAnswers(visitId: v.id, answersJson: #"""
            {"members": [{"id_number": "11010519491231002X"}], "trigger_source": "schedule", "interviewee_name": "吉克阿呷",
             "location_missing_reason": "no_signal", "basic_living_difficulty": "no", "risk_level": "low",
             "recommendation": "monitor", "emergency": "no", "next_visit_due": "2027-03-01",
             "investigator_1_name": "马海木呷", "consent_privacy": "yes"}
            """#)
        // The interviewee signs the draft; only a visit holding a signature can be marked signed.
        _ = try c.addSignature(visitId: v.id, fieldPath: "interviewee_signature", image: cameraJpeg)
        XCTAssertEqual(try c.completeVisit(visitId: v.id).status, .completed)
        try c.signVisit(visitId: v.id)
        XCTAssertEqual(try c.visit(visitId: v.id).status, .signed)
        XCTAssertEqual(try c.visitsOfHousehold(householdId: h).count, 1)
        XCTAssertEqual(try c.counts().signed, 1)
        // The phone changes under an open draft: the draft says so, with both values.
        let draft = try c.startVisit(householdId: h, visitType: "routine")
        try c.editHouseholdField(householdId: h, field: "phone", valueJson: "\"13900000009\"")
        let changed = try c.changesSinceOpened(visitId: draft.id)
        XCTAssertEqual(changed.map { $0.path }, ["household_phone"])
        XCTAssertEqual(changed.first?.nowJson, "\"13900000009\"")
    }

    func testBadInputMapsToTypedErrors() throws {
        let c = try openStore()
        XCTAssertThrowsError(try c.startVisit(householdId: nil, visitType: "routine")) { error in
            guard case let ZoufangError.InvalidState(code, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(code, "not_signed_in")
        }
        try c.signIn(userId: "coord-1")
        XCTAssertThrowsError(try c.signIn(userId: "coord-2")) { error in
            guard case let ZoufangError.InvalidState(code, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(code, "wrong_user")
        }
        let v = try c.startVisit(householdId: nil, visitType: "routine")
        XCTAssertThrowsError(try c.setAnswer(visitId: v.id, path: "address", valueJson: "{oops")) { error in
            guard case let ZoufangError.InvalidInput(code, _) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(code, "invalid_json")
        }
        XCTAssertThrowsError(try c.visit(visitId: "nope")) { error in
            guard case ZoufangError.NotFound = error else { return XCTFail("\(error)") }
        }
    }

    func testAPhotoIsStoredWithItsAnswerAndRemovedAgain() throws {
        let c = try openStore()
        try c.signIn(userId: "coord-1")
        let v = try c.startVisit(householdId: nil, visitType: "application_survey")
        // A 64×48 JPEG from a camera; small photos are kept at their size.
        let jpeg = cameraJpeg
        let photo = try c.addPhoto(visitId: v.id, fieldPath: "house_exterior_photo", image: jpeg)
        XCTAssertEqual(photo.mimeType, "image/jpeg")
        XCTAssertTrue(photo.metadataJson.contains("\"width\":64"), photo.metadataJson)
        XCTAssertEqual(UInt64(try c.attachmentContent(contentHash: photo.contentHash).count), photo.sizeBytes)
        XCTAssertEqual(try c.attachmentsOfVisit(visitId: v.id).map { $0.id }, [photo.id])
        try c.removeAttachment(visitId: v.id, attachmentId: photo.id)
        XCTAssertTrue(try c.attachmentsOfVisit(visitId: v.id).isEmpty)
        XCTAssertThrowsError(try c.addPhoto(visitId: v.id, fieldPath: "house_exterior_photo", image: Data([1, 2, 3]))) { error in
            guard case let ZoufangError.InvalidInput(code, detail) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(code, "invalid_value")
            XCTAssertTrue(detail.contains("image_unreadable"), detail)
        }
    }

    func testAnEncryptedStoreOpensOnlyWithItsKeyAndSurvivesARotation() throws {
        let key = "3f1c2a9d8e7b6a5f4e3d2c1b0a99887766554433221100ffeeddccbbaa998877"
        let newKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        for cipher in [Cipher.aes256, Cipher.sm4] {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("zoufang-key-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let path = dir.appendingPathComponent("store.db").path
            var household = ""
            do {
                let c = try Collector.open(path: path, protection: .encrypted(key: key, cipher: cipher))
                try c.signIn(userId: "coord-1")
                household = try c.newHousehold()
                try c.rotateKey(newKey: newKey)
            }
            let other: Cipher = cipher == .aes256 ? .sm4 : .aes256
            for (k, suite) in [(key, cipher), (newKey, other)] {
                XCTAssertThrowsError(try Collector.open(path: path, protection: .encrypted(key: k, cipher: suite))) { error in
                    guard case let ZoufangError.Storage(code, _) = error else { return XCTFail("\(error)") }
                    XCTAssertEqual(code, "wrong_key_or_not_a_store")
                }
            }
            let c = try Collector.open(path: path, protection: .encrypted(key: newKey, cipher: cipher))
            XCTAssertEqual(try c.household(id: household).members.count, 1)
        }
    }

    func testTwoPhonesSyncAndResolveAConflictAsync() async throws {
        let server = try TestServer()
        let a = try openStore(), b = try openStore()
        _ = try a.enroll(serverUrl: server.url, enrollmentToken: try server.enrolmentToken("coord-a"), deviceName: "a")
        _ = try b.enroll(serverUrl: server.url, enrollmentToken: try server.enrolmentToken("coord-b"), deviceName: "b")
        let h = try a.newHousehold()
        let progress = Progress()
        let first = try await a.sync(serverUrl: server.url, listener: progress)
        XCTAssertEqual(first.pushed, 2)
        XCTAssertTrue(progress.updates.contains { $0.phase == .push })
        XCTAssertEqual(progress.updates.last?.phase, .done)
        _ = try await b.sync(serverUrl: server.url, listener: nil)
        try a.editHouseholdField(householdId: h, field: "phone", valueJson: "\"13900000001\"")
        try b.editHouseholdField(householdId: h, field: "phone", valueJson: "\"13900000002\"")
        try a.routineVisit(household: h)
        _ = try await a.sync(serverUrl: server.url, listener: nil)
        let second = try await b.sync(serverUrl: server.url, listener: nil)
        XCTAssertEqual(second.conflicts, 1)
        _ = try await a.sync(serverUrl: server.url, listener: nil)
        let conflict = try a.conflicts().first!
        XCTAssertEqual(conflict.values.map(\.user), ["coord-a", "coord-b"])
        try a.resolveConflict(conflictId: conflict.id, valueJson: "\"13900000001\"")
        _ = try await a.sync(serverUrl: server.url, listener: nil)
        _ = try await b.sync(serverUrl: server.url, listener: nil)
        XCTAssertTrue(try a.conflicts().isEmpty && b.conflicts().isEmpty)
        XCTAssertEqual(try a.household(id: h).fieldsJson, try b.household(id: h).fieldsJson)
        XCTAssertEqual(try a.syncStatus().pendingChanges, 0)
    }

    func testASwiftTransportCarriesARealSync() async throws {
        let server = try TestServer()
        let transport = UrlSessionTransport(base: server.url)
        let a = try openStore()
        _ = try a.enrollWithTransport(transport: transport, enrollmentToken: try server.enrolmentToken("coord-s"), deviceName: "swift-http")
        let h = try a.newHousehold()
        // A visit signed on the screen: its signature image goes up after the visit's data.
        let v = try a.startVisit(householdId: h, visitType: "routine")
        try a.setAnswers(visitId: v.id, answersJson: #"""
            {"trigger_source": "schedule", "outcome": "completed", "interviewee_name": "吉克阿呷",
             "location_missing_reason": "no_signal", "basic_living_difficulty": "no", "risk_level": "low",
             "recommendation": "monitor", "emergency": "no", "next_visit_due": "2027-03-01",
             "investigator_1_name": "马海木呷", "consent_privacy": "yes"}
            """#)
        _ = try a.addSignature(visitId: v.id, fieldPath: "investigator_1_signature", image: cameraJpeg)
        _ = try a.completeVisit(visitId: v.id)
        let waiting = try a.visitsWithPendingAttachments()
        XCTAssertEqual(waiting.map { $0.visitId }, [v.id])
        XCTAssertFalse(waiting[0].visitSynced)
        XCTAssertEqual(try a.syncStatus().pendingAttachments, 1)
        let report = try await a.syncWithTransport(transport: transport, listener: nil)
        XCTAssertEqual(report.rejected, 0)
        XCTAssertGreaterThanOrEqual(report.accepted, 3)
        XCTAssertEqual(report.attachmentsUploaded, 1)
        XCTAssertTrue(try a.visitsWithPendingAttachments().isEmpty)
        XCTAssertEqual(try a.syncStatus().pendingAttachments, 0)
        XCTAssertGreaterThanOrEqual(transport.requests, 6)
    }

    func testOneStoreFromSeveralThreads() throws {
        let c = try openStore()
        try c.signIn(userId: "coord-1")
        DispatchQueue.concurrentPerform(iterations: 8) { i in
            for j in 0..<10 { _ = try? c.newHousehold(phone: String(format: "139%08d", i * 100 + j)) }
        }
        XCTAssertEqual(try c.counts().households, 80)
        XCTAssertEqual(try c.searchHouseholds(query: "吉克", limit: 100).count, 80)
    }
}
