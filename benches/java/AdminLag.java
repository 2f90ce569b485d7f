// The reference for `make bench`'s lag part: a warm Java AdminClient, Kafka's own client, reading
// the committed offsets of every group in one listConsumerGroupOffsets call (one FindCoordinator,
// one OffsetFetch per coordinator) and the log ends of their partitions in one listOffsets call.
// Run with Java's source launcher: java -cp "$CGO_KAFKA_LIBS/*" AdminLag.java BOOTSTRAP GROUPS_FILE ROUNDS
// Prints one line: "best_ms mean_ms total_lag".
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.HashSet;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListConsumerGroupOffsetsSpec;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;

public class AdminLag {
    public static void main(String[] args) throws Exception {
        List<String> groups = Files.readAllLines(Path.of(args[1]));
        int rounds = Integer.parseInt(args[2]);
        Properties properties = new Properties();
        properties.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        try (Admin admin = Admin.create(properties)) {
            long best = Long.MAX_VALUE, sum = 0, lag = 0;
            // One untimed round warms the JVM, the connections and the coordinator lookups.
            for (int round = -1; round < rounds; round++) {
                long started = System.nanoTime();
                Map<String, ListConsumerGroupOffsetsSpec> specs = new HashMap<>();
                for (String group : groups) specs.put(group, new ListConsumerGroupOffsetsSpec());
                Map<String, Map<TopicPartition, OffsetAndMetadata>> committed =
                        admin.listConsumerGroupOffsets(specs).all().get();
                Set<TopicPartition> partitions = new HashSet<>();
                for (Map<TopicPartition, OffsetAndMetadata> offsets : committed.values()) partitions.addAll(offsets.keySet());
                Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
                for (TopicPartition tp : partitions) latest.put(tp, OffsetSpec.latest());
                var ends = admin.listOffsets(latest).all().get();
                lag = 0;
                for (Map<TopicPartition, OffsetAndMetadata> offsets : committed.values()) {
                    for (var entry : offsets.entrySet()) {
                        if (entry.getValue() != null) lag += Math.max(0, ends.get(entry.getKey()).offset() - entry.getValue().offset());
                    }
                }
                long elapsed = System.nanoTime() - started;
                if (round >= 0) {
                    best = Math.min(best, elapsed);
                    sum += elapsed;
                }
            }
            System.out.printf("%.3f %.3f %d%n", best / 1e6, sum / 1e6 / rounds, lag);
        }
    }
}
