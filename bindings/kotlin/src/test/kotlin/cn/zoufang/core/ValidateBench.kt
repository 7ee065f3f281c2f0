package cn.zoufang.core

import java.io.File
import java.nio.file.Files

/**
 * Kotlin-side cost of a typical call against the same call made from Rust (`bindings/bench.sh`).
 * The call is `validateVisit` on a full application survey (134 answers, 6 members). Both sides
 * read the same store, alternately, round by round, so the ratio is a same-run figure on a noisy
 * machine. The Rust side is `zoufang bench-validate`, which calls the core directly.
 */
fun main() {
    val cli = System.getProperty("zoufang.cli") ?: error("zoufang.cli is not set")
    val calls = (System.getProperty("zoufang.bench.calls") ?: "2000").toInt()
    val rounds = (System.getProperty("zoufang.bench.rounds") ?: "5").toInt()
    val dir = Files.createTempDirectory("zoufang-bench-validate").toFile()
    try {
        val store = File(dir, "store.db").path
        val visitId = runCli(cli, "--plaintext", "--store", store, "bench-validate", "--prepare").trim()
        Collector.open(store, StoreProtection.Plaintext).use { collector ->
            collector.signIn("bench-coordinator")
            // Warm the JIT, JNA's stubs and SQLite's page cache, as the Rust side warms its cache.
            repeat(System.getProperty("zoufang.bench.warmup")?.toInt() ?: 500) { collector.validateVisit(visitId) }
            // The crossing alone: a call that does almost nothing on the Rust side.
            repeat(20_000) { collector.currentUser() }
            val crossing = median(LongArray(calls) {
                val start = System.nanoTime()
                collector.currentUser()
                System.nanoTime() - start
            })
            println("a near-empty call (currentUser) from Kotlin: ${us(crossing)} µs")
            val kotlin = mutableListOf<Long>()
            val rust = mutableListOf<Long>()
            repeat(rounds) { round ->
                val times = LongArray(calls) {
                    val start = System.nanoTime()
                    val problems = collector.validateVisit(visitId)
                    val elapsed = System.nanoTime() - start
                    check(problems.isEmpty()) { "the benchmark visit should be valid" }
                    elapsed
                }
                kotlin += median(times)
                val out = runCli(cli, "--store", store, "bench-validate", "--visit", visitId, "--rounds", "$calls")
                val nanos = Regex("\"nanos\":\\[([0-9,]*)]").find(out)?.groupValues?.get(1)
                    ?: error("unexpected output from bench-validate: $out")
                rust += median(nanos.split(',').map { it.toLong() }.toLongArray())
                println("round ${round + 1}: kotlin ${us(kotlin.last())} µs, rust ${us(rust.last())} µs")
            }
            val k = median(kotlin.toLongArray())
            val r = median(rust.toLongArray())
            println(
                "validate a full visit: kotlin ${us(k)} µs, rust ${us(r)} µs, " +
                    "ratio %.2fx (median of $rounds rounds of $calls calls)".format(k.toDouble() / r),
            )
        }
    } finally {
        dir.deleteRecursively()
    }
}

private fun median(values: LongArray): Long = values.sorted()[values.size / 2]

private fun us(nanos: Long) = "%.1f".format(nanos / 1000.0)

private fun runCli(vararg args: String): String {
    val p = ProcessBuilder(*args).redirectErrorStream(true).start()
    val out = p.inputStream.bufferedReader().readText()
    check(p.waitFor() == 0) { "${args.drop(1)} failed: $out" }
    return out
}
