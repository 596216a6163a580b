import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.FileInputStream;
import java.nio.charset.StandardCharsets;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.io.SequenceFile;
import org.apache.hadoop.io.SequenceFile.CompressionType;
import org.apache.hadoop.io.Text;
import org.apache.hadoop.io.compress.BZip2Codec;
import org.apache.hadoop.io.compress.CompressionCodec;
import org.apache.hadoop.io.compress.DefaultCodec;
import org.apache.hadoop.io.compress.GzipCodec;
import org.apache.hadoop.io.compress.zlib.ZlibFactory;
import org.apache.hadoop.util.ReflectionUtils;

/**
 * Writes a SequenceFile of (Text, Text) with Hadoop's own SequenceFile.Writer, from
 * lines "hex(key)\thex(value)" (bytes are written exactly, no UTF-8 re-encoding).
 *
 * Usage: WriteSeqFile INPUT OUTPUT [NONE|RECORD|BLOCK] [default|gzip|bzip2]
 * OUTPUT is any Hadoop path: file:///..., hdfs://host:port/..., or relative to
 * fs.defaultFS. io.seqfile.compress.blocksize defaults to 4096 here (so BLOCK files
 * have many blocks); override with -Dbackfill.blocksize=N.
 */
public class WriteSeqFile {
    static byte[] unhex(String s, int lineNo) {
        if (s.length() % 2 != 0) throw new IllegalArgumentException("line " + lineNo + ": odd hex length");
        byte[] out = new byte[s.length() / 2];
        for (int i = 0; i < out.length; i++) {
            int hi = Character.digit(s.charAt(2 * i), 16), lo = Character.digit(s.charAt(2 * i + 1), 16);
            if (hi < 0 || lo < 0) throw new IllegalArgumentException("line " + lineNo + ": bad hex digit");
            out[i] = (byte) ((hi << 4) | lo);
        }
        return out;
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 2 || args.length > 4) {
            System.err.println("usage: WriteSeqFile INPUT OUTPUT [NONE|RECORD|BLOCK] [default|gzip|bzip2]");
            System.exit(2);
        }
        String input = args[0];
        Path output = new Path(args[1]);
        CompressionType type = CompressionType.valueOf(args.length > 2 ? args[2].toUpperCase() : "NONE");
        String codecName = args.length > 3 ? args[3].toLowerCase() : "default";

        Configuration conf = new Configuration();
        conf.setInt("io.seqfile.compress.blocksize", Integer.getInteger("backfill.blocksize", 4096));
        // Only Writable serialization: the Avro ones in Hadoop's default list need jars we do not ship.
        conf.set("io.serializations", "org.apache.hadoop.io.serializer.WritableSerialization");
        // Local output without .crc side files (and without NativeCrc32, see native/libhadoop_zlib.c).
        conf.set("fs.file.impl", "org.apache.hadoop.fs.RawLocalFileSystem");
        conf.setBoolean("fs.file.impl.disable.cache", true);
        // Shell group lookup: the JNI one would be chosen once "native code" is loaded.
        conf.set("hadoop.security.group.mapping", "org.apache.hadoop.security.ShellBasedUnixGroupsMapping");
        Class<? extends CompressionCodec> codecClass;
        switch (codecName) {
            case "default": codecClass = DefaultCodec.class; break;
            case "gzip": codecClass = GzipCodec.class; break;
            case "bzip2": codecClass = BZip2Codec.class; break;
            default: throw new IllegalArgumentException("unknown codec " + codecName + " (default|gzip|bzip2)");
        }
        CompressionCodec codec = ReflectionUtils.newInstance(codecClass, conf);
        if (codec instanceof GzipCodec && type != CompressionType.NONE && !ZlibFactory.isNativeZlibLoaded(conf)) {
            System.err.println("WriteSeqFile: Hadoop's SequenceFile.Writer needs native zlib for GzipCodec; run with"
                    + " -Djava.library.path=DIR holding the libhadoop.so built from scripts/java/native"
                    + " (scripts/write-seqfile.sh does this)");
            System.exit(3);
        }

        long n = 0;
        try (BufferedReader in = new BufferedReader(new InputStreamReader(new FileInputStream(input), StandardCharsets.US_ASCII));
             SequenceFile.Writer w = SequenceFile.createWriter(conf,
                     SequenceFile.Writer.file(output),
                     SequenceFile.Writer.keyClass(Text.class),
                     SequenceFile.Writer.valueClass(Text.class),
                     // An uncompressed file names no codec; passing one would only trip the gzip check.
                     type == CompressionType.NONE
                             ? SequenceFile.Writer.compression(CompressionType.NONE)
                             : SequenceFile.Writer.compression(type, codec))) {
            Text k = new Text(), v = new Text();
            String line;
            int lineNo = 0;
            while ((line = in.readLine()) != null) {
                lineNo++;
                if (line.isEmpty()) continue;
                int tab = line.indexOf('\t');
                if (tab < 0) throw new IllegalArgumentException(input + " line " + lineNo + ": no tab");
                k.set(unhex(line.substring(0, tab), lineNo));
                v.set(unhex(line.substring(tab + 1), lineNo));
                w.append(k, v);
                n++;
            }
        }
        System.err.println("WriteSeqFile: wrote " + n + " records to " + output + " (" + type + (type == CompressionType.NONE ? "" : ", " + codecClass.getSimpleName()) + ")");
    }
}
