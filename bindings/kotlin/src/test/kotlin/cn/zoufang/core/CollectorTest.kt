package cn.zoufang.core

import java.io.File
import java.net.URI
import java.net.http.HttpClient
import java.net.http.HttpRequest as JHttpRequest
import java.net.http.HttpResponse as JHttpResponse
import java.nio.file.Files
import java.util.concurrent.CopyOnWriteArrayList
import kotlinx.coroutines.async
import kotlinx.coroutines.awaitAll
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.runBlocking
import kotlin.test.AfterTest
import kotlin.test.Test
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertNotNull
import kotlin.test.assertTrue

const val VILLAGE = "513431104201"

/** Temporary directories of the suite, deleted with the stores in them when the JVM exits
 * (`File.deleteOnExit` leaves a directory that is not empty behind). */
private val tempDirs = CopyOnWriteArrayList<File>().also { dirs ->
    Runtime.getRuntime().addShutdownHook(Thread { dirs.forEach { it.deleteRecursively() } })
}

fun tempDir(prefix: String): File = Files.createTempDirectory(prefix).toFile().also { tempDirs.add(it) }

/** A fresh store, encrypted with a random key as an app's would be (Keystore-held). */
fun openStore(): Collector = Collector.open(tempDir("zoufang-kotlin").resolve("store.db").path, StoreProtection.Encrypted(randomKey(), Cipher.AES256))

fun randomKey(): String = ByteArray(32).also { java.security.SecureRandom().nextBytes(it) }.joinToString("") { "%02x".format(it) }

fun Collector.newHousehold(phone: String = "13812345678"): String = addHousehold(
    VILLAGE,
    """{"phone": "$phone", "urban_rural": "rural", "address": "三组", "next_visit_due": "2026-12-01"}""",
    listOf("""{"name": "吉克阿呷", "id_type": "resident_id", "id_number": "11010519491231002X", "relationship": "02", "lives_together": "yes", "health": "healthy"}"""),
)

/** A signature pad's strokes, as the PNG the app hands the core. */
fun signaturePng(): ByteArray {
    val strokes = java.awt.image.BufferedImage(500, 160, java.awt.image.BufferedImage.TYPE_BYTE_GRAY)
    for (x in 0 until 500) strokes.setRGB(x, 80 + (x % 40) - 20, 0xFFFFFF)
    return java.io.ByteArrayOutputStream().also { javax.imageio.ImageIO.write(strokes, "png", it) }.toByteArray()
}

fun Collector.routineVisit(household: String): String {
    val v = startVisit(household, "routine")
    setAnswers(
        v.id,
        """{"trigger_source": "schedule", "outcome": "completed", "interviewee_name": "吉克阿呷",
            "location_missing_reason": "no_signal", "basic_living_difficulty": "no", "risk_level": "low",
            "recommendation": "monitor", "emergency": "no", "next_visit_due": "2027-03-01",
            "investigator_1_name": "马海木呷", "consent_privacy": "yes"}""",
    )
    completeVisit(v.id)
    return v.id
}

class CollectorTest {
    private val opened = mutableListOf<AutoCloseable>()
    private fun <T : AutoCloseable> T.closeLater(): T = also { opened += it }

    @AfterTest
    fun closeAll() = opened.reversed().forEach { it.close() }

    @Test
    fun `forms come with Chinese and Yi labels and checked expressions`() {
        val c = openStore().closeLater()
        c.signIn("coord-1")
        assertEquals("coord-1", c.currentUser())
        val form = c.form(null)
        assertEquals("household_visit", form.id)
        assertTrue(form.titleIi.all { it in '\uA000'..'\uA48F' }, "Yi title")
        assertTrue(form.definitionJson.contains("\"sections\""))
        assertTrue(c.codeListsJson().contains("彝族"))
    }

    @Test
    fun `households are added, found, shown and edited`() {
        val c = openStore().closeLater()
        c.signIn("coord-1")
        val h = c.newHousehold()
        assertEquals(h, c.searchHouseholds("吉克", 10u).single().id)
        assertEquals(h, c.searchHouseholds("1101", 10u).single().id)
        // The same person about to be registered again: the phone says where they already are.
        assertEquals(h, c.householdsHoldingIdNumber("11010519491231002x").single().id)
        assertEquals(1, c.householdsInVillage(VILLAGE, 50u, 0u).size)
        assertEquals(1, c.householdsDue("2026-12-31", VILLAGE, 50u).size)
        // A region code as it enters from the app is checked: an empty or short one is refused.
        for (village in listOf("", "5134311042")) {
            assertEquals("invalid_value", assertFailsWith<ZoufangException.InvalidInput> { c.householdsInVillage(village, 50u, 0u) }.code)
        }
        c.editHouseholdField(h, "phone", "\"0834-1234567\"")
        val shown = c.household(h)
        assertEquals("吉克阿呷", shown.headName)
        assertTrue(shown.fieldsJson.contains("0834-1234567"))
        c.editMemberField(shown.members.single().id, "health", "\"chronic\"")
        val bad = assertFailsWith<ZoufangException.InvalidInput> { c.editHouseholdField(h, "phone", "\"12345\"") }
        assertEquals("invalid_value", bad.code)
        assertTrue(!bad.message!!.contains("12345"), "no personal data in messages")
        // The family moves away: off the due list and the counts, still found when asked.
        c.setHouseholdStatus(h, "moved_away", "全家搬到西昌", "2026-11-20")
        assertTrue(c.householdsDue("2026-12-31", VILLAGE, 50u).isEmpty())
        assertTrue(c.searchHouseholds("吉克", 10u).isEmpty())
        assertEquals("moved_away", c.searchAllHouseholds("吉克", 10u).single().status)
        assertEquals(0uL to 1uL, c.counts().let { it.households to it.householdsInactive })
        c.setMemberStatus(shown.members.single().id, "deceased", null, null)
        assertEquals(0, c.household(h).members.size)
        assertEquals(1, c.household(h).formerMembers.size)
    }

    @Test
    fun `a visit is answered, checked, completed, signed and listed`() {
        val c = openStore().closeLater()
        c.signIn("coord-1")
        val h = c.newHousehold()
        val v = c.startVisit(h, "disability_check")
        assertEquals(VisitStatus.DRAFT, v.status)
        c.setAnswer(v.id, "outcome", "\"completed\"")
        c.setAnswer(v.id, "members[0].id_number", "\"11010519491231002Y\"")
        val states = c.fieldStates(v.id)
        assertTrue(states.single { it.path == "interviewee_name" }.required)
        val problems = c.validateVisit(v.id)
        val id = problems.single { it.path == "members[0].id_number" }
        assertEquals("resident_id_characters", id.code)
        assertTrue(id.blocksCompletion && id.messageZh.contains("身份证"))
        val refused = assertFailsWith<ZoufangException.VisitHasProblems> { c.completeVisit(v.id) }
        assertTrue(refused.problems.any { it.path == "members[0].id_number" })
        assertEquals(v.id, c.myDrafts().single().id)
        c.setAnswers(
            v.id,
            """{"members": [{"id_number": "11010519491231002X"}], "trigger_source": "schedule", "interviewee_name": "吉克阿呷",
                "location_missing_reason": "no_signal", "basic_living_difficulty": "no", "risk_level": "low",
                "recommendation": "monitor", "emergency": "no", "next_visit_due": "2027-03-01",
                "investigator_1_name": "马海木呷", "consent_privacy": "yes"}""",
        )
        // The interviewee signs the draft; only a visit holding a signature can be marked signed.
        c.addSignature(v.id, "interviewee_signature", signaturePng())
        assertEquals(VisitStatus.COMPLETED, c.completeVisit(v.id).status)
        c.signVisit(v.id)
        assertEquals(VisitStatus.SIGNED, c.visit(v.id).status)
        assertEquals(1, c.visitsOfHousehold(h).size)
        val draft = c.startVisit(h, "routine")
        // The phone changes under the open draft: the draft says so, with both values.
        c.editHouseholdField(h, "phone", "\"13900000009\"")
        val changed = c.changesSinceOpened(draft.id).single()
        assertEquals("household_phone" to "\"13900000009\"", changed.path to changed.nowJson)
        c.voidVisit(draft.id, "重复录入")
        assertEquals(VisitStatus.VOID, c.visit(draft.id).status)
        val counts = c.counts()
        assertEquals(1uL, counts.signed)
        assertEquals(1uL, counts.voided)
    }

    @Test
    fun `bad input maps to typed exceptions with stable codes`() {
        val c = openStore().closeLater()
        assertEquals("not_signed_in", assertFailsWith<ZoufangException.InvalidState> { c.startVisit(null, "routine") }.code)
        c.signIn("coord-1")
        assertEquals("wrong_user", assertFailsWith<ZoufangException.InvalidState> { c.signIn("coord-2") }.code)
        val v = c.startVisit(null, "routine")
        assertEquals("invalid_json", assertFailsWith<ZoufangException.InvalidInput> { c.setAnswer(v.id, "address", "{oops") }.code)
        assertEquals("answer_type", assertFailsWith<ZoufangException.InvalidInput> { c.setAnswer(v.id, "village_code_year", "\"x\"") }.code)
        assertEquals("not_found", assertFailsWith<ZoufangException.NotFound> { c.visit("nope") }.code)
        assertEquals("not_enrolled", assertFailsWith<ZoufangException.InvalidState> { runBlocking { c.sync("http://127.0.0.1:9", null) } }.code)
        val junk = tempDir("zoufang-bad").resolve("junk.db").apply { writeBytes(ByteArray(8192) { 0x5a }) }
        assertEquals("wrong_key_or_not_a_store", assertFailsWith<ZoufangException.Storage> { Collector.open(junk.path, StoreProtection.Plaintext) }.code)
    }

    @Test
    fun `a photo from the camera is stored with its answer and removed again`() {
        val c = openStore().closeLater()
        c.signIn("coord-1")
        val v = c.startVisit(null, "application_survey")
        // A camera file written by the JVM's own JPEG encoder, passed by path.
        val image = java.awt.image.BufferedImage(2400, 1800, java.awt.image.BufferedImage.TYPE_INT_RGB)
        for (x in 0 until 2400 step 8) for (y in 0 until 1800 step 8) image.setRGB(x, y, x * y)
        val file = tempDir("zoufang-camera").resolve("camera.jpg")
        javax.imageio.ImageIO.write(image, "jpg", file)
        val photo = c.addPhotoFile(v.id, "house_exterior_photo", file.path)
        assertEquals("image/jpeg", photo.mimeType)
        assertTrue(photo.metadataJson.contains("\"width\":1600"), photo.metadataJson)
        val bytes = c.attachmentContent(photo.contentHash)
        assertEquals(photo.sizeBytes, bytes.size.toULong())
        assertEquals(listOf(photo.id), c.attachmentsOfVisit(v.id).map { it.id })
        assertEquals("\"${photo.id}\"", c.visit(v.id).answersJson.let { Regex("\"house_exterior_photo\":(\"[^\"]+\")").find(it)!!.groupValues[1] })
        c.removeAttachment(v.id, photo.id)
        assertTrue(c.attachmentsOfVisit(v.id).isEmpty())
        assertEquals("not_found", assertFailsWith<ZoufangException.NotFound> { c.attachmentContent(photo.contentHash) }.code)
        val bad = assertFailsWith<ZoufangException.InvalidInput> { c.addPhoto(v.id, "house_exterior_photo", byteArrayOf(1, 2, 3)) }
        assertEquals("invalid_value", bad.code)
        assertTrue(bad.detail.contains("image_unreadable"), bad.detail)
    }

    @Test
    fun `an encrypted store opens only with its key and suite, and survives a key rotation`() {
        val key = "3f1c2a9d8e7b6a5f4e3d2c1b0a99887766554433221100ffeeddccbbaa998877"
        val newKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
        for (cipher in Cipher.entries) {
            val path = tempDir("zoufang-key").resolve("store.db").path
            val household = Collector.open(path, StoreProtection.Encrypted(key, cipher)).use { c ->
                c.signIn("coord-1")
                c.newHousehold().also { c.rotateKey(newKey) }
            }
            val other = if (cipher == Cipher.AES256) Cipher.SM4 else Cipher.AES256
            val wrong = listOf(StoreProtection.Encrypted(key, cipher), StoreProtection.Encrypted(newKey, other), StoreProtection.Plaintext)
            for (protection in wrong) {
                val e = assertFailsWith<ZoufangException.Storage> { Collector.open(path, protection) }
                assertEquals("wrong_key_or_not_a_store", e.code)
            }
            Collector.open(path, StoreProtection.Encrypted(newKey, cipher)).use { c ->
                assertEquals(1, c.household(household).members.size)
            }
        }
    }

    @Test
    fun `two phones sync through a real server, a conflict is made and resolved from Kotlin`() = runBlocking<Unit> {
        val server = TestServer().closeLater()
        val a = openStore().closeLater()
        val b = openStore().closeLater()
        assertEquals("coord-a", a.enroll(server.url, server.enrolmentToken("coord-a", VILLAGE), "a").id)
        b.enroll(server.url, server.enrolmentToken("coord-b", VILLAGE), "b")
        val h = a.newHousehold()
        val updates = CopyOnWriteArrayList<SyncProgress>()
        val listener = object : SyncListener {
            override fun onProgress(progress: SyncProgress) {
                updates.add(progress)
            }
        }
        val first = a.sync(server.url, listener)
        assertEquals(2uL, first.pushed)
        assertTrue(updates.any { it.phase == SyncPhase.PUSH } && updates.last().phase == SyncPhase.DONE)
        b.sync(server.url, null)
        a.editHouseholdField(h, "phone", "\"13900000001\"")
        b.editHouseholdField(h, "phone", "\"13900000002\"")
        a.routineVisit(h)
        a.sync(server.url, null)
        assertEquals(1uL, b.sync(server.url, null).conflicts)
        a.sync(server.url, null)
        val conflict = a.conflicts().single()
        assertEquals(listOf("coord-a", "coord-b"), conflict.values.map { it.user })
        assertEquals("\"13900000002\"", conflict.provisionalJson)
        a.resolveConflict(conflict.id, "\"13900000001\"")
        a.sync(server.url, null)
        b.sync(server.url, null)
        assertTrue(a.conflicts().isEmpty() && b.conflicts().isEmpty())
        assertEquals(a.household(h).fieldsJson, b.household(h).fieldsJson)
        assertTrue(b.household(h).fieldsJson.contains("13900000001"))
        assertEquals(0uL, a.syncStatus().pendingChanges)
    }

    /** The app's own HTTP stack (java.net.http here; OkHttp on Android) carries a real sync. */
    class JdkTransport(private val base: String) : HttpTransport {
        private val client = HttpClient.newHttpClient()
        val requests = java.util.concurrent.atomic.AtomicInteger()

        override fun send(request: HttpRequest): HttpResponse {
            requests.incrementAndGet()
            val builder = JHttpRequest.newBuilder(URI.create(base + request.path))
                .method(request.method, JHttpRequest.BodyPublishers.ofByteArray(request.body))
            for (h in request.headers) {
                if (h.name.lowercase() !in setOf("content-length", "host", "connection")) builder.header(h.name, h.value)
            }
            val response = try {
                client.send(builder.build(), JHttpResponse.BodyHandlers.ofByteArray())
            } catch (e: java.io.IOException) {
                throw ZoufangException.Network("transport", "no answer from the server")
            }
            return HttpResponse(response.statusCode().toUShort(), response.body())
        }
    }

    @Test
    fun `a transport written in Kotlin carries a real sync`() = runBlocking<Unit> {
        val server = TestServer().closeLater()
        val transport = JdkTransport(server.url)
        val a = openStore().closeLater()
        a.enrollWithTransport(transport, server.enrolmentToken("coord-k", VILLAGE), "kotlin-http")
        val h = a.newHousehold()
        // A visit signed on the screen: its signature image goes up after the visit's data.
        val v = a.startVisit(h, "routine")
        a.setAnswers(
            v.id,
            """{"trigger_source": "schedule", "outcome": "completed", "interviewee_name": "吉克阿呷",
                "location_missing_reason": "no_signal", "basic_living_difficulty": "no", "risk_level": "low",
                "recommendation": "monitor", "emergency": "no", "next_visit_due": "2027-03-01",
                "investigator_1_name": "马海木呷", "consent_privacy": "yes"}""",
        )
        a.addSignature(v.id, "investigator_1_signature", signaturePng())
        a.completeVisit(v.id)
        val waiting = a.visitsWithPendingAttachments().single()
        assertEquals(v.id, waiting.visitId)
        assertTrue(!waiting.visitSynced && a.syncStatus().pendingAttachments == 1uL)
        val phases = CopyOnWriteArrayList<SyncPhase>()
        val report = a.syncWithTransport(transport, object : SyncListener {
            override fun onProgress(progress: SyncProgress) {
                phases.add(progress.phase)
            }
        })
        assertEquals(0uL, report.rejected)
        assertTrue(report.accepted >= 3uL, "the household, its member and the visit")
        assertEquals(1uL, report.attachmentsUploaded)
        assertTrue(SyncPhase.ATTACHMENTS in phases)
        assertTrue(a.visitsWithPendingAttachments().isEmpty() && a.syncStatus().pendingAttachments == 0uL)
        assertTrue(transport.requests.get() >= 6, "enrol, catalog, push, pull, status and the chunk went through Kotlin")
        val b = openStore().closeLater()
        b.enroll(server.url, server.enrolmentToken("coord-l", VILLAGE), "b")
        b.sync(server.url, null)
        assertEquals(1, b.householdsInVillage(VILLAGE, 10u, 0u).size)
    }

    @Test
    fun `one store is used from several threads at once`() = runBlocking<Unit> {
        val c = openStore().closeLater()
        c.signIn("coord-1")
        val ids = (0 until 8).map { i ->
            async(Dispatchers.IO) {
                (0 until 10).map { j -> c.newHousehold(phone = "139%08d".format(i * 100 + j)) }
            }
        }.awaitAll().flatten()
        assertEquals(80, ids.toSet().size)
        val searches = (0 until 8).map { async(Dispatchers.IO) { c.searchHouseholds("吉克", 100u).size } }.awaitAll()
        assertTrue(searches.all { it == 80 })
        assertNotNull(c.counts().households.takeIf { it == 80uL })
    }
}
