package cn.zoufang.core

import java.io.File
import java.net.ServerSocket
import java.net.Socket
import java.nio.file.Files

/** A real `zoufang serve` on a loopback port, administered with `zoufang admin`. */
class TestServer : AutoCloseable {
    private val cli = System.getProperty("zoufang.cli") ?: error("zoufang.cli is not set")
    private val data: File = Files.createTempDirectory("zoufang-server").toFile()
    private val port = ServerSocket(0).use { it.localPort }
    val url = "http://127.0.0.1:$port"
    private val process: Process

    /** The server's data is encrypted at rest, as a deployment's is: a fresh key per server. */
    private val serverKey = ByteArray(32).also { java.security.SecureRandom().nextBytes(it) }
        .joinToString("") { "%02x".format(it) }

    private fun keyed(builder: ProcessBuilder) = builder.apply { environment()["ZOUFANG_SERVER_KEY"] = serverKey }

    init {
        process = keyed(ProcessBuilder(cli, "serve", "--data", data.path, "--listen", "127.0.0.1:$port"))
            .redirectErrorStream(true)
            .redirectOutput(File(data, "server.log"))
            .start()
        repeat(200) {
            try {
                Socket("127.0.0.1", port).close()
                return@repeat
            } catch (e: java.io.IOException) {
                Thread.sleep(25)
            }
        }
    }

    private fun admin(vararg args: String): String {
        val p = keyed(ProcessBuilder(listOf(cli, "admin", "--data", data.path) + args)).redirectErrorStream(true).start()
        val out = p.inputStream.bufferedReader().readText().trim()
        check(p.waitFor() == 0) { "admin ${args.toList()} failed: $out" }
        return out
    }

    /** Creates a coordinator for [village] and returns a one-time enrolment token. */
    fun enrolmentToken(user: String, village: String, role: String = "coordinator"): String {
        admin("user-add", user, "--role", role, "--area", village)
        return admin("enroll-token", user)
    }

    override fun close() {
        process.destroy()
        process.waitFor()
        data.deleteRecursively()
    }
}
