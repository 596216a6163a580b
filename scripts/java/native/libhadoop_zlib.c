/*
 * A minimal stand-in for Hadoop's native library (libhadoop.so), providing only
 * the JNI methods of org.apache.hadoop.io.compress.zlib.ZlibCompressor (and an
 * initIDs for ZlibDecompressor, so ZlibFactory reports native zlib as loaded).
 *
 * Why: Hadoop 2.7.3's SequenceFile.Writer refuses GzipCodec unless native zlib is
 * loaded (its pure-Java gzip stream cannot restart a gzip member per record/block),
 * and the pyspark package we take the jars from ships no libhadoop.so. With this
 * library on java.library.path, Hadoop's own GzipCodec -> GzipZlibCompressor ->
 * ZlibCompressor path runs unchanged and writes gzip members exactly as a cluster
 * with native libs did (zlib deflate with windowBits 31).
 *
 * Load it ONLY in a JVM that writes SequenceFiles to a raw local file: Hadoop then
 * believes all native code is loaded, and e.g. NativeCrc32 (checksummed local files,
 * HDFS client writes) or JNI group mapping would fail with UnsatisfiedLinkError.
 * Written for this project against the Java side's fields (see `javap -p`).
 */
#include <jni.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static jfieldID f_stream, f_ubuf, f_uoff, f_ulen, f_cbuf, f_csize, f_finish, f_finished;

static void throw_new(JNIEnv *env, const char *cls, const char *msg) {
    jclass c = (*env)->FindClass(env, cls);
    if (c) (*env)->ThrowNew(env, c, msg ? msg : "zlib error");
}

JNIEXPORT void JNICALL
Java_org_apache_hadoop_io_compress_zlib_ZlibCompressor_initIDs(JNIEnv *env, jclass cls) {
    f_stream = (*env)->GetFieldID(env, cls, "stream", "J");
    f_ubuf = (*env)->GetFieldID(env, cls, "uncompressedDirectBuf", "Ljava/nio/Buffer;");
    f_uoff = (*env)->GetFieldID(env, cls, "uncompressedDirectBufOff", "I");
    f_ulen = (*env)->GetFieldID(env, cls, "uncompressedDirectBufLen", "I");
    f_cbuf = (*env)->GetFieldID(env, cls, "compressedDirectBuf", "Ljava/nio/Buffer;");
    f_csize = (*env)->GetFieldID(env, cls, "directBufferSize", "I");
    f_finish = (*env)->GetFieldID(env, cls, "finish", "Z");
    f_finished = (*env)->GetFieldID(env, cls, "finished", "Z");
    /* a NULL id has already raised NoSuchFieldError: initIDs fails, native zlib stays off */
}

JNIEXPORT jlong JNICALL
Java_org_apache_hadoop_io_compress_zlib_ZlibCompressor_init(JNIEnv *env, jclass cls,
        jint level, jint strategy, jint windowBits) {
    z_stream *zs = calloc(1, sizeof(z_stream));
    if (!zs) { throw_new(env, "java/lang/OutOfMemoryError", "z_stream"); return 0; }
    int rv = deflateInit2(zs, level, Z_DEFLATED, windowBits, 8 /* memLevel, zlib's default */, strategy);
    if (rv != Z_OK) {
        free(zs);
        throw_new(env, rv == Z_STREAM_ERROR ? "java/lang/IllegalArgumentException" : "java/lang/InternalError",
                  "deflateInit2 failed");
        return 0;
    }
    return (jlong)(intptr_t)zs;
}

JNIEXPORT void JNICALL
Java_org_apache_hadoop_io_compress_zlib_ZlibCompressor_setDictionary(JNIEnv *env, jclass cls,
        jlong stream, jbyteArray b, jint off, jint len) {
    jbyte *buf = (*env)->GetByteArrayElements(env, b, NULL);
    if (!buf) return;
    int rv = deflateSetDictionary((z_stream *)(intptr_t)stream, (const Bytef *)buf + off, (uInt)len);
    (*env)->ReleaseByteArrayElements(env, b, buf, JNI_ABORT);
    if (rv != Z_OK) throw_new(env, "java/lang/IllegalArgumentException", "deflateSetDictionary failed");
}

JNIEXPORT jint JNICALL
Java_org_apache_hadoop_io_compress_zlib_ZlibCompressor_deflateBytesDirect(JNIEnv *env, jobject self) {
    z_stream *zs = (z_stream *)(intptr_t)(*env)->GetLongField(env, self, f_stream);
    if (!zs) { throw_new(env, "java/lang/NullPointerException", "stream"); return 0; }
    Bytef *in = (*env)->GetDirectBufferAddress(env, (*env)->GetObjectField(env, self, f_ubuf));
    Bytef *out = (*env)->GetDirectBufferAddress(env, (*env)->GetObjectField(env, self, f_cbuf));
    if (!in || !out) return 0;
    jint uoff = (*env)->GetIntField(env, self, f_uoff);
    jint ulen = (*env)->GetIntField(env, self, f_ulen);
    jint csize = (*env)->GetIntField(env, self, f_csize);
    jboolean finish = (*env)->GetBooleanField(env, self, f_finish);

    zs->next_in = in + uoff;
    zs->avail_in = (uInt)ulen;
    zs->next_out = out;
    zs->avail_out = (uInt)csize;
    int rv = deflate(zs, finish ? Z_FINISH : Z_NO_FLUSH);
    switch (rv) {
    case Z_STREAM_END:
        (*env)->SetBooleanField(env, self, f_finished, JNI_TRUE);
        /* fall through: account for what was consumed and produced */
    case Z_OK:
        (*env)->SetIntField(env, self, f_uoff, uoff + (ulen - (jint)zs->avail_in));
        (*env)->SetIntField(env, self, f_ulen, (jint)zs->avail_in);
        return csize - (jint)zs->avail_out;
    case Z_BUF_ERROR: /* no progress possible: nothing in, or no room out */
        return 0;
    default:
        throw_new(env, "java/lang/InternalError", zs->msg);
        return 0;
    }
}

JNIEXPORT jlong JNICALL
Java_org_apache_hadoop_io_compress_zlib_ZlibCompressor_getBytesRead(JNIEnv *env, jclass cls, jlong stream) {
    return (jlong)((z_stream *)(intptr_t)stream)->total_in;
}

JNIEXPORT jlong JNICALL
Java_org_apache_hadoop_io_compress_zlib_ZlibCompressor_getBytesWritten(JNIEnv *env, jclass cls, jlong stream) {
    return (jlong)((z_stream *)(intptr_t)stream)->total_out;
}

JNIEXPORT void JNICALL
Java_org_apache_hadoop_io_compress_zlib_ZlibCompressor_reset(JNIEnv *env, jclass cls, jlong stream) {
    if (deflateReset((z_stream *)(intptr_t)stream) != Z_OK) throw_new(env, "java/lang/InternalError", "deflateReset failed");
}

JNIEXPORT void JNICALL
Java_org_apache_hadoop_io_compress_zlib_ZlibCompressor_end(JNIEnv *env, jclass cls, jlong stream) {
    z_stream *zs = (z_stream *)(intptr_t)stream;
    if (deflateEnd(zs) == Z_STREAM_ERROR) throw_new(env, "java/lang/InternalError", "deflateEnd failed");
    else free(zs);
}

JNIEXPORT jstring JNICALL
Java_org_apache_hadoop_io_compress_zlib_ZlibCompressor_getLibraryName(JNIEnv *env, jclass cls) {
    return (*env)->NewStringUTF(env, "libz.so.1 (backfill shim, zlib " ZLIB_VERSION ")");
}

/* Decompression is never done in the writing JVM; initIDs only lets ZlibFactory
 * see native zlib as loaded. Any real use fails loudly (UnsatisfiedLinkError). */
JNIEXPORT void JNICALL
Java_org_apache_hadoop_io_compress_zlib_ZlibDecompressor_initIDs(JNIEnv *env, jclass cls) {
}
