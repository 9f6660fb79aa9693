// A compatibility shim for the Pub/Sub emulator 0.8.20 (Debian package google-cloud-cli-pubsub-emulator), whose
// bundled grpc-core calls io.grpc.InternalStatus.asRuntimeException(Status, Metadata, boolean), a method its bundled
// grpc-api lacks. Without it, every cancelled or reset streaming pull throws NoSuchMethodError inside the server's
// close handling, the call is never torn down, and the emulator keeps a "ghost" consumer on the subscription that
// takes later messages and never gives them back. scripts/pubsub-emulator compiles this file and puts it on the
// classpath ahead of the emulator's jar. It is the old class plus the one missing method, as in grpc-api 1.60+.
package io.grpc;

public final class InternalStatus {
  private InternalStatus() {}

  public static final Metadata.Key<String> MESSAGE_KEY = Status.MESSAGE_KEY;

  public static final Metadata.Key<Status> CODE_KEY = Status.CODE_KEY;

  public static StatusRuntimeException asRuntimeExceptionWithoutStacktrace(Status status, Metadata trailers) {
    return new InternalStatusRuntimeException(status, trailers);
  }

  public static StatusRuntimeException asRuntimeException(Status status, Metadata trailers, boolean fillInStackTrace) {
    return fillInStackTrace
        ? new StatusRuntimeException(status, trailers)
        : new InternalStatusRuntimeException(status, trailers);
  }
}
