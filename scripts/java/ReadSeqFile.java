import java.io.PrintStream;
import java.io.BufferedOutputStream;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.io.SequenceFile;
import org.apache.hadoop.io.Text;

/**
 * Reads a SequenceFile of (Text, Text) with Hadoop's own SequenceFile.Reader and prints
 * each record as "hex(key)\thex(value)" (the input format of WriteSeqFile), so a
 * written file can be compared byte for byte with its source. The header (codec,
 * compression) and the record count go to stderr.
 *
 * Usage: ReadSeqFile PATH
 */
public class ReadSeqFile {
    private static final char[] HEX = "0123456789abcdef".toCharArray();

    static void hex(StringBuilder sb, byte[] b, int len) {
        for (int i = 0; i < len; i++) {
            sb.append(HEX[(b[i] >> 4) & 0xf]).append(HEX[b[i] & 0xf]);
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 1) {
            System.err.println("usage: ReadSeqFile PATH");
            System.exit(2);
        }
        Configuration conf = new Configuration();
        // Only Writable serialization: the Avro ones in Hadoop's default list need jars we do not ship.
        conf.set("io.serializations", "org.apache.hadoop.io.serializer.WritableSerialization");
        Path p = new Path(args[0]);
        PrintStream out = new PrintStream(new BufferedOutputStream(System.out, 1 << 16), false, "US-ASCII");
        long n = 0;
        try (SequenceFile.Reader r = new SequenceFile.Reader(conf, SequenceFile.Reader.file(p))) {
            System.err.println("ReadSeqFile: " + p + " key=" + r.getKeyClassName() + " value=" + r.getValueClassName()
                    + " compression=" + r.getCompressionType()
                    + " codec=" + (r.getCompressionCodec() == null ? "none" : r.getCompressionCodec().getClass().getName()));
            Text k = new Text(), v = new Text();
            StringBuilder sb = new StringBuilder();
            while (r.next(k, v)) {
                sb.setLength(0);
                hex(sb, k.getBytes(), k.getLength());
                sb.append('\t');
                hex(sb, v.getBytes(), v.getLength());
                out.println(sb);
                n++;
            }
        }
        out.flush();
        System.err.println("ReadSeqFile: " + n + " records");
    }
}
