// The Debezium side of `make bench-peers` (decision 0043): the PostgreSQL connector (pgoutput) with its Outbox
// Event Router in Debezium's embedded engine, and a Kafka producer writing the router's records, the way Debezium
// Server's Kafka sink does: each batch the engine hands over is sent in full, every send is awaited, and only then
// are the batch's records marked processed (at-least-once: an offset never passes an unacknowledged record).
//
// Guarantees: exits 0 once `expect` records routed to `topic` have been acknowledged by the broker (acks=all,
// idempotent producer with the publisher's batching: linger.ms=10, batch.size=16384, lz4, 5 in flight); exits 2
// when the engine stops first, 3 on timeout. Its last stdout line is one JSON object with its own timings (ms since
// the epoch): {"records":…,"ignored":…,"started_ms":…,"first_ack_ms":…,"last_ack_ms":…}. The bench measures the
// drain on the broker itself (high watermarks), this line is a cross-check.
//
// Connector setup: snapshot.mode=no_data with a replication slot and publication created before the backlog was
// written, so the engine streams every change still in the WAL (nothing is read by a snapshot). Deletes (the
// outbox rows removed in their writing transaction, as Debezium's outbox documentation recommends) reach the
// router, which drops them. Everything else is the connector's and the engine's default.
//
// Usage: java -cp 'libs/*:classes' OutboxRunner key=value… with keys bootstrap, db.host, db.port, db.name,
// db.user, db.password, slot, publication, topic, expect, offsets (a file), timeout.secs (default 1800).

import io.debezium.engine.DebeziumEngine;
import io.debezium.engine.RecordChangeEvent;
import io.debezium.embedded.Connect;
import io.debezium.engine.format.ChangeEventFormat;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.connect.header.Header;
import org.apache.kafka.connect.source.SourceRecord;
import org.apache.kafka.connect.storage.SimpleHeaderConverter;
import org.apache.kafka.connect.storage.StringConverter;

public final class OutboxRunner {
    public static void main(String[] args) throws Exception {
        Map<String, String> a = new HashMap<>();
        for (String arg : args) {
            int eq = arg.indexOf('=');
            if (eq < 0) {
                System.err.println("argument '" + arg + "' is not key=value (see the header of OutboxRunner.java)");
                System.exit(64);
            }
            a.put(arg.substring(0, eq), arg.substring(eq + 1));
        }
        String topic = need(a, "topic");
        long expect = Long.parseLong(need(a, "expect"));
        long timeoutSecs = Long.parseLong(a.getOrDefault("timeout.secs", "1800"));

        Properties p = new Properties();
        p.setProperty("name", "bench-outbox-router");
        p.setProperty("connector.class", "io.debezium.connector.postgresql.PostgresConnector");
        p.setProperty("offset.storage", "org.apache.kafka.connect.storage.FileOffsetBackingStore");
        p.setProperty("offset.storage.file.filename", need(a, "offsets"));
        p.setProperty("database.hostname", need(a, "db.host"));
        p.setProperty("database.port", need(a, "db.port"));
        p.setProperty("database.dbname", need(a, "db.name"));
        p.setProperty("database.user", need(a, "db.user"));
        p.setProperty("database.password", need(a, "db.password"));
        p.setProperty("topic.prefix", "bench");
        p.setProperty("plugin.name", "pgoutput");
        p.setProperty("slot.name", need(a, "slot"));
        p.setProperty("publication.name", need(a, "publication"));
        p.setProperty("publication.autocreate.mode", "disabled");
        p.setProperty("table.include.list", "public.outbox");
        p.setProperty("snapshot.mode", "no_data");
        // The Outbox Event Router, mapped onto our outbox table (migrations/*outbox*.sql).
        p.setProperty("transforms", "outbox");
        p.setProperty("transforms.outbox.type", "io.debezium.transforms.outbox.EventRouter");
        p.setProperty("transforms.outbox.table.field.event.id", "event_id");
        p.setProperty("transforms.outbox.table.field.event.key", "partition_key");
        p.setProperty("transforms.outbox.table.field.event.payload", "payload");
        p.setProperty("transforms.outbox.table.fields.additional.placement",
            "event_type:header,event_version:header,aggregate_type:header,aggregate_id:header");
        p.setProperty("transforms.outbox.route.by.field", "topic");
        p.setProperty("transforms.outbox.route.topic.replacement", topic);

        Properties pp = new Properties();
        pp.setProperty("bootstrap.servers", need(a, "bootstrap"));
        pp.setProperty("acks", "all");
        pp.setProperty("enable.idempotence", "true");
        pp.setProperty("retries", "2147483647");
        pp.setProperty("max.in.flight.requests.per.connection", "5");
        pp.setProperty("compression.type", "lz4");
        pp.setProperty("batch.size", "16384");
        pp.setProperty("linger.ms", "10");
        pp.setProperty("max.request.size", "1048576");
        KafkaProducer<byte[], byte[]> producer =
            new KafkaProducer<>(pp, new ByteArraySerializer(), new ByteArraySerializer());

        // What a Connect worker with StringConverter keys/values and its default header converter would write.
        StringConverter strings = new StringConverter();
        strings.configure(Map.of(), false);
        SimpleHeaderConverter headerConverter = new SimpleHeaderConverter();
        headerConverter.configure(Map.of());

        long started = System.currentTimeMillis();
        AtomicLong acked = new AtomicLong();
        AtomicLong ignored = new AtomicLong();
        AtomicLong firstAck = new AtomicLong();
        AtomicLong lastAck = new AtomicLong();
        CountDownLatch done = new CountDownLatch(1);
        CountDownLatch stopped = new CountDownLatch(1);

        DebeziumEngine.ChangeConsumer<RecordChangeEvent<SourceRecord>> sink = (batch, committer) -> {
            List<Future<RecordMetadata>> sent = new ArrayList<>(batch.size());
            for (RecordChangeEvent<SourceRecord> event : batch) {
                SourceRecord r = event.record();
                if (r.value() == null || !topic.equals(r.topic())) {
                    ignored.incrementAndGet();
                    continue;
                }
                RecordHeaders headers = new RecordHeaders();
                for (Header h : r.headers()) {
                    headers.add(h.key(), headerConverter.fromConnectHeader(topic, h.key(), h.schema(), h.value()));
                }
                byte[] key = strings.fromConnectData(topic, r.keySchema(), r.key());
                byte[] value = r.value() instanceof byte[] b ? b
                    : String.valueOf(r.value()).getBytes(StandardCharsets.UTF_8);
                sent.add(producer.send(new ProducerRecord<>(topic, null, key, value, headers), (md, err) -> {
                    if (err == null) {
                        long now = System.currentTimeMillis();
                        firstAck.compareAndSet(0, now);
                        lastAck.set(now);
                        if (acked.incrementAndGet() == expect) {
                            done.countDown();
                        }
                    }
                }));
            }
            for (Future<RecordMetadata> f : sent) {
                try {
                    f.get();
                } catch (java.util.concurrent.ExecutionException e) {
                    throw new RuntimeException("the broker refused a record: " + e.getCause(), e.getCause());
                }
            }
            for (RecordChangeEvent<SourceRecord> event : batch) {
                committer.markProcessed(event);
            }
            committer.markBatchFinished();
        };

        DebeziumEngine<RecordChangeEvent<SourceRecord>> engine = DebeziumEngine.create(ChangeEventFormat.of(Connect.class))
            .using(p)
            .notifying(sink)
            .using((success, message, error) -> {
                if (!success) {
                    System.err.println("engine stopped: " + message + (error == null ? "" : ": " + error));
                }
                stopped.countDown();
            })
            .build();
        ExecutorService executor = Executors.newSingleThreadExecutor();
        executor.execute(engine);

        int rc = 0;
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutSecs);
        while (!done.await(200, TimeUnit.MILLISECONDS)) {
            if (stopped.getCount() == 0) {
                rc = 2;
                break;
            }
            if (System.nanoTime() > deadline) {
                System.err.println("timeout: " + acked.get() + " of " + expect + " records acknowledged");
                rc = 3;
                break;
            }
        }
        System.out.printf("{\"records\":%d,\"ignored\":%d,\"started_ms\":%d,\"first_ack_ms\":%d,\"last_ack_ms\":%d}%n",
            acked.get(), ignored.get(), started, firstAck.get(), lastAck.get());
        System.out.flush();
        engine.close();
        executor.shutdown();
        executor.awaitTermination(30, TimeUnit.SECONDS);
        producer.close();
        System.exit(rc);
    }

    private static String need(Map<String, String> a, String key) {
        String v = a.get(key);
        if (v == null || v.isEmpty()) {
            System.err.println("missing argument " + key + "=… (see the header of OutboxRunner.java)");
            System.exit(64);
        }
        return v;
    }
}
