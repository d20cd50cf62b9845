// Client side: long-lived channels and self-owning call reactors over
// grpc::GenericStub. A call lives until both gRPC (OnDone) and the C caller
// (pm_client_call_release) are done with it.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>

#include <atomic>
#include <limits>
#include <mutex>
#include <utility>

#include "shim_internal.hpp"

using pipemesh::SetError;

struct pm_channel {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<grpc::GenericStub> stub;
};

namespace {

std::shared_ptr<grpc::ChannelCredentials> ChannelCredentials(
    const pm_tls_config *tls) {
  if (tls == nullptr) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = pipemesh::OrEmpty(tls->root_certificates_pem);
  options.pem_private_key = pipemesh::OrEmpty(tls->private_key_pem);
  options.pem_cert_chain = pipemesh::OrEmpty(tls->certificate_chain_pem);
  return grpc::SslCredentials(options);
}

void Configure(grpc::ClientContext *context, const pm_call_options *options) {
  if (options == nullptr) return;
  if (options->timeout_ms > 0) {
    context->set_deadline(pipemesh::DeadlineAfter(options->timeout_ms));
  }
  for (size_t i = 0; i < options->metadata_count; ++i) {
    const pm_metadata_entry &entry = options->metadata[i];
    context->AddMetadata(std::string(entry.key, entry.key_length),
                         std::string(entry.value, entry.value_length));
  }
}

}  // namespace

// Shared by both call kinds: the context, the reference count and the
// outcome.
struct pm_client_call {
  virtual ~pm_client_call() = default;

  void Unreference() {
    if (references_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  virtual void RequestNext() {}

  // Cancels a call still running; a completed call is left alone (grpc is
  // tearing it down on its own thread, and there is nothing to cancel).
  virtual void Cancel() {
    if (!completed_.load(std::memory_order_acquire)) context.TryCancel();
  }

  grpc::ClientContext context;

 protected:
  void MarkCompleted() { completed_.store(true, std::memory_order_release); }

 private:
  std::atomic<int> references_{2};
  std::atomic<bool> completed_{false};
};

namespace {

class UnaryCall final : public pm_client_call, public grpc::ClientUnaryReactor {
 public:
  UnaryCall(pm_unary_done done, void *context) : done_(done), context_(context) {}

  void Start(grpc::GenericStub *stub, const char *method,
             const pm_outgoing_bytes &request) {
    request_ = pipemesh::MakeByteBuffer(request);
    stub->PrepareUnaryCall(&context, method, grpc::StubOptions(), &request_,
                           &response_, this);
    StartCall();
  }

  void OnDone(const grpc::Status &status) override {
    MarkCompleted();
    pm_received_bytes response{nullptr, 0, nullptr};
    if (status.ok()) response = pipemesh::TakeReceivedBytes(response_);
    done_(context_, status.error_code(), status.error_message().c_str(),
          response);
    Unreference();
  }

 private:
  pm_unary_done done_;
  void *context_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
};

// A server stream read one message per request from the receiver.
class StreamCall final : public pm_client_call,
                         public grpc::ClientBidiReactor<grpc::ByteBuffer,
                                                        grpc::ByteBuffer> {
 public:
  StreamCall(pm_stream_message on_message, pm_stream_done on_done,
             void *context)
      : on_message_(on_message), on_done_(on_done), context_(context) {}

  void Start(grpc::GenericStub *stub, const char *method,
             const pm_outgoing_bytes &request) {
    request_ = pipemesh::MakeByteBuffer(request);
    stub->PrepareBidiStreamingCall(&context, method, grpc::StubOptions(), this);
    AddHold();  // held until the end of the stream has been read
    StartWriteLast(&request_, grpc::WriteOptions());
    StartCall();
  }

  void RequestNext() override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!reading_ && !ended_) {
      reading_ = true;
      StartRead(&message_);
    }
  }

  // Cancels and drains the stream, so that it ends even when the receiver
  // asks for no more messages. A stream whose end was read is complete.
  void Cancel() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (ended_) return;
      cancelled_ = true;
    }
    context.TryCancel();
    RequestNext();
  }

  void OnReadDone(bool ok) override {
    bool deliver;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      reading_ = false;
      ended_ = !ok;
      deliver = ok && !cancelled_;
    }
    if (!ok) {
      RemoveHold();
    } else if (deliver) {
      on_message_(context_, pipemesh::TakeReceivedBytes(message_));
    } else {
      message_.Clear();
      RequestNext();
    }
  }

  void OnDone(const grpc::Status &status) override {
    MarkCompleted();
    on_done_(context_, status.error_code(), status.error_message().c_str());
    Unreference();
  }

 private:
  pm_stream_message on_message_;
  pm_stream_done on_done_;
  void *context_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer message_;
  std::mutex mutex_;
  bool reading_ = false;
  bool ended_ = false;
  bool cancelled_ = false;
};

// grpc++ 1.51 shares one callback completion queue among channels and tears
// it down (joining its threads) when the last channel that used it is
// destroyed. A call's ClientContext can hold that last channel reference and
// release it on one of the queue's own threads, where the join fails
// silently and the queue is freed under the running thread (a crash, later,
// in grpc_cq_internal_unref). An anchor channel that is never destroyed, and
// that made one callback call so that it holds the queue, keeps the queue
// alive for the life of the process. Its target is a Unix socket path that
// does not exist: the call fails at once and nothing is sent anywhere.
void AnchorCallbackQueue() {
  static std::once_flag once;
  std::call_once(once, [] {
    auto *channel = new std::shared_ptr<grpc::Channel>(
        grpc::CreateChannel("unix:/nonexistent/pipemesh-anchor", grpc::InsecureChannelCredentials()));
    auto *stub = new grpc::GenericStub(*channel);
    auto *context = new grpc::ClientContext;
    context->set_deadline(pipemesh::DeadlineAfter(1));
    grpc::Slice empty;
    auto *request = new grpc::ByteBuffer(&empty, 1);
    auto *response = new grpc::ByteBuffer;
    stub->UnaryCall(context, "/pipemesh.v1.Diagnostics/Describe", grpc::StubOptions(), request, response,
                    [context, request, response](grpc::Status) {
                      delete context;
                      delete request;
                      delete response;
                    });
    // The channel and stub stay: they are the anchor.
  });
}

}  // namespace

extern "C" {

pm_channel *pm_channel_create(const char *target,
                              const pm_transport_config *transport,
                              pm_error *error) {
  if (target == nullptr || *target == '\0') {
    SetError(error, PM_STATUS_INVALID_ARGUMENT, "empty target address");
    return nullptr;
  }
  grpc::ChannelArguments arguments;
  int limit = pipemesh::ClampToInt(pipemesh::EffectiveMaxMessageBytes(transport));
  arguments.SetMaxReceiveMessageSize(limit);
  arguments.SetMaxSendMessageSize(limit);
  const pm_tls_config *tls = transport ? transport->tls : nullptr;
  if (tls != nullptr && tls->server_name_override != nullptr) {
    arguments.SetSslTargetNameOverride(tls->server_name_override);
  }
  if (transport != nullptr && transport->keepalive_time_ms > 0) {
    arguments.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS,
                     pipemesh::ClampToInt(transport->keepalive_time_ms));
    arguments.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    arguments.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  }
  if (transport != nullptr && transport->keepalive_timeout_ms > 0) {
    arguments.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                     pipemesh::ClampToInt(transport->keepalive_timeout_ms));
  }
  AnchorCallbackQueue();
  auto *channel = new pm_channel;
  channel->channel =
      grpc::CreateCustomChannel(target, ChannelCredentials(tls), arguments);
  channel->stub = std::make_unique<grpc::GenericStub>(channel->channel);
  return channel;
}

int pm_channel_wait_connected(pm_channel *channel, int64_t timeout_ms) {
  return channel->channel->WaitForConnected(
             pipemesh::DeadlineAfter(timeout_ms))
             ? 1
             : 0;
}

void pm_channel_destroy(pm_channel *channel) { delete channel; }

pm_client_call *pm_client_unary(pm_channel *channel, const char *method,
                                pm_outgoing_bytes request,
                                const pm_call_options *options,
                                pm_unary_done done, void *context) {
  auto *call = new UnaryCall(done, context);
  Configure(&call->context, options);
  call->Start(channel->stub.get(), method, request);
  return call;
}

pm_client_call *pm_client_server_stream(pm_channel *channel,
                                        const char *method,
                                        pm_outgoing_bytes request,
                                        const pm_call_options *options,
                                        pm_stream_message on_message,
                                        pm_stream_done on_done, void *context) {
  auto *call = new StreamCall(on_message, on_done, context);
  Configure(&call->context, options);
  call->Start(channel->stub.get(), method, request);
  return call;
}

void pm_client_call_request_next(pm_client_call *call) { call->RequestNext(); }

void pm_client_call_cancel(pm_client_call *call) { call->Cancel(); }

void pm_client_call_release(pm_client_call *call) { call->Unreference(); }

}  // extern "C"
