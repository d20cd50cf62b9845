// Client side: long-lived channels, and calls over grpc::GenericStub's
// completion-queue API. A call lives until both its pending operations and
// the C caller (pm_client_call_release) are done with it.
#include <grpcpp/alarm.h>
#include <grpcpp/channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

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
  if (options->wait_for_ready != 0) context->set_wait_for_ready(true);
  for (size_t i = 0; i < options->metadata_count; ++i) {
    const pm_metadata_entry &entry = options->metadata[i];
    context->AddMetadata(std::string(entry.key, entry.key_length),
                         std::string(entry.value, entry.value_length));
  }
}

// The client loop: the completion queue that every client call completes on,
// polled by one thread for the life of the process, which also runs the work
// posted to it (pm_client_loop_post) between completions. One thread, because
// grpc 1.51's epoll engine lets only one thread of a process wait for socket
// events at a time: a second polling thread would take answers off the socket
// and then have to wake the first.
class ClientLoop {
 public:
  static ClientLoop &Shared() {
    static auto *loop = new ClientLoop;  // never destroyed: its thread polls until exit
    return *loop;
  }

  grpc::CompletionQueue *queue() { return &queue_; }

  // Whether the calling thread is the loop's.
  static bool IsCurrent() { return is_current_; }

  void Post(pm_loop_runner runner, void *runner_context, void *work) {
    std::lock_guard<std::mutex> lock(mutex_);
    posted_.push_back({runner, runner_context, work});
    // A loop that is handling a completion (or running work) looks at its
    // list before it polls again; only one waiting in Next needs waking.
    if (polling_ && !wake_pending_) {
      wake_pending_ = true;
      wake_.Set(&queue_, gpr_time_0(GPR_CLOCK_MONOTONIC), &wake_tag_);
    }
  }

 private:
  struct Work {
    pm_loop_runner runner;
    void *runner_context;
    void *work;
  };

  ClientLoop() {
    std::thread([this] { Run(); }).detach();
  }

  void Run();

  // Hands one tag from the queue to its call (or takes the wake-up).
  void Handle(void *tag, bool ok);

  // Takes the work posted so far into `batch`; when there is none, sets
  // `polling_` (the caller then waits in Next, and later posts wake it).
  bool TakePosted(std::vector<Work> &batch) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (posted_.empty()) {
      polling_ = true;
      return false;
    }
    batch.swap(posted_);
    return true;
  }

  static thread_local bool is_current_;

  grpc::CompletionQueue queue_;
  std::mutex mutex_;
  std::vector<Work> posted_;
  bool polling_ = false;       // the thread is (about to be) waiting in Next
  bool wake_pending_ = false;  // wake_ is set and its tag not yet taken
  grpc::Alarm wake_;
  char wake_tag_ = 0;  // its address tells the wake-up from call tags
};

thread_local bool ClientLoop::is_current_ = false;

}  // namespace

// Shared by both call kinds: the context and the reference count (one for
// the C caller until pm_client_call_release, one per pending operation).
struct pm_client_call {
  enum class Operation { kStart, kWrite, kWritesDone, kRead, kFinish };

  // The tag a completion queue returns for one of a call's operations.
  struct Tag {
    pm_client_call *call;
    Operation operation;
  };

  virtual ~pm_client_call() = default;

  virtual void Complete(Operation operation, bool ok) = 0;

  void Reference() { references_.fetch_add(1, std::memory_order_relaxed); }

  void Unreference() {
    if (references_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  virtual void RequestNext() {}

  // Client streams only: other calls refuse the message.
  virtual void Write(pm_outgoing_bytes message, pm_write_done done, void *context) {
    pipemesh::DropOutgoingBytes(message);
    if (done != nullptr) done(context, 0);
  }
  virtual void WritesDone() {}

  // Cancels a call still running; a completed call is left alone.
  virtual void Cancel() {
    if (!completed_.load(std::memory_order_acquire)) context.TryCancel();
  }

  grpc::ClientContext context;

 protected:
  void MarkCompleted() { completed_.store(true, std::memory_order_release); }

  Tag start_tag_{this, Operation::kStart};
  Tag write_tag_{this, Operation::kWrite};
  Tag writes_done_tag_{this, Operation::kWritesDone};
  Tag read_tag_{this, Operation::kRead};
  Tag finish_tag_{this, Operation::kFinish};

 private:
  std::atomic<int> references_{1};
  std::atomic<bool> completed_{false};
};

namespace {

void ClientLoop::Run() {
  is_current_ = true;
  std::vector<Work> batch;
  void *tag;
  bool ok;
  for (;;) {
    if (TakePosted(batch)) {
      for (const Work &item : batch) item.runner(item.runner_context, item.work);
      batch.clear();
      // Completions that are ready go before the work this batch posted, so
      // that work which keeps posting more (a task that yields in a loop)
      // cannot keep answers from ever being taken.
      while (queue_.AsyncNext(&tag, &ok, gpr_time_0(GPR_CLOCK_MONOTONIC)) ==
             grpc::CompletionQueue::GOT_EVENT) {
        Handle(tag, ok);
      }
      continue;
    }
    if (!queue_.Next(&tag, &ok)) return;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      polling_ = false;
    }
    Handle(tag, ok);
  }
}

void ClientLoop::Handle(void *tag, bool ok) {
  if (tag == &wake_tag_) {
    std::lock_guard<std::mutex> lock(mutex_);
    wake_pending_ = false;
    return;
  }
  auto *operation = static_cast<pm_client_call::Tag *>(tag);
  operation->call->Complete(operation->operation, ok);
  operation->call->Unreference();
}

class UnaryCall final : public pm_client_call {
 public:
  UnaryCall(pm_unary_done done, void *context) : done_(done), context_(context) {}

  void Start(grpc::GenericStub *stub, const char *method,
             const pm_outgoing_bytes &request, grpc::CompletionQueue *queue) {
    request_ = pipemesh::MakeByteBuffer(request);
    reader_ = stub->PrepareUnaryCall(&context, method, request_, queue);
    reader_->StartCall();
    Reference();
    reader_->Finish(&response_, &status_, &finish_tag_);
  }

  void Complete(Operation, bool) override {
    MarkCompleted();
    pm_received_bytes response{nullptr, 0, nullptr};
    if (status_.ok()) response = pipemesh::TakeReceivedBytes(response_);
    done_(context_, status_.error_code(), status_.error_message().c_str(), response);
  }

 private:
  pm_unary_done done_;
  void *context_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
  grpc::Status status_;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> reader_;
};

// A server stream (a generic bidirectional call with one request), read one
// message per request from the receiver.
class StreamCall final : public pm_client_call {
 public:
  StreamCall(pm_stream_message on_message, pm_stream_done on_done,
             void *context)
      : on_message_(on_message), on_done_(on_done), context_(context) {}

  void Start(grpc::GenericStub *stub, const char *method,
             const pm_outgoing_bytes &request, grpc::CompletionQueue *queue) {
    request_ = pipemesh::MakeByteBuffer(request);
    stream_ = stub->PrepareCall(&context, method, queue);
    Reference();
    stream_->StartCall(&start_tag_);
  }

  void RequestNext() override {
    std::lock_guard<std::mutex> lock(mutex_);
    wants_message_ = true;
    ReadIfWantedLocked();
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

  void Complete(Operation operation, bool ok) override {
    switch (operation) {
      case Operation::kStart: {
        std::lock_guard<std::mutex> lock(mutex_);
        started_ = true;
        if (!ok) {  // the call failed at once: only its status is left
          EndLocked();
          return;
        }
        Reference();
        stream_->WriteLast(request_, grpc::WriteOptions(), &write_tag_);
        ReadIfWantedLocked();
        return;
      }
      case Operation::kWrite:
        return;  // a failed write shows in the status
      case Operation::kRead:
        OnRead(ok);
        return;
      case Operation::kFinish:
        MarkCompleted();
        on_done_(context_, status_.error_code(), status_.error_message().c_str());
        return;
    }
  }

 private:
  void OnRead(bool ok) {
    bool deliver;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      reading_ = false;
      if (!ok) {
        EndLocked();
        return;
      }
      deliver = !cancelled_;
      if (!deliver) ReadIfWantedLocked();  // draining a cancelled stream
    }
    if (deliver) {
      on_message_(context_, pipemesh::TakeReceivedBytes(message_));
    } else {
      message_.Clear();
    }
  }

  void ReadIfWantedLocked() {
    if (!started_ || reading_ || ended_ || !(wants_message_ || cancelled_)) return;
    wants_message_ = false;
    reading_ = true;
    Reference();
    stream_->Read(&message_, &read_tag_);
  }

  void EndLocked() {
    ended_ = true;
    Reference();
    stream_->Finish(&status_, &finish_tag_);
  }

  pm_stream_message on_message_;
  pm_stream_done on_done_;
  void *context_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer message_;
  grpc::Status status_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> stream_;
  std::mutex mutex_;
  bool started_ = false;
  bool wants_message_ = false;
  bool reading_ = false;
  bool ended_ = false;
  bool cancelled_ = false;
};

// A client stream (a generic bidirectional call with one response): the
// caller writes one message at a time, then ends its messages; the answer is
// read from the start, so a server that fails early ends the call at once.
class ClientStreamCall final : public pm_client_call {
 public:
  ClientStreamCall(pm_unary_done done, void *context) : done_(done), context_(context) {}

  void Start(grpc::GenericStub *stub, const char *method, grpc::CompletionQueue *queue) {
    stream_ = stub->PrepareCall(&context, method, queue);
    Reference();
    stream_->StartCall(&start_tag_);
  }

  void Write(pm_outgoing_bytes message, pm_write_done done, void *context) override {
    std::unique_lock<std::mutex> lock(mutex_);
    if (ended_ || writing_ || writes_done_) {
      lock.unlock();
      pipemesh::DropOutgoingBytes(message);
      if (done != nullptr) done(context, 0);
      return;
    }
    message_ = pipemesh::MakeByteBuffer(message);
    write_done_ = done;
    write_context_ = context;
    writing_ = true;
    if (started_) WriteLocked();  // else once the call has started
  }

  void WritesDone() override {
    std::lock_guard<std::mutex> lock(mutex_);
    if (writes_done_) return;
    writes_done_ = true;
    if (started_ && !writing_ && !ended_) CloseLocked();
  }

  void Complete(Operation operation, bool ok) override {
    switch (operation) {
      case Operation::kStart: {
        pm_write_done failed = nullptr;
        void *failed_context = nullptr;
        {
          std::lock_guard<std::mutex> lock(mutex_);
          started_ = true;
          if (!ok) {  // the call failed at once: a write waiting for the start fails
            if (writing_) {
              writing_ = false;
              message_.Clear();
              failed = std::exchange(write_done_, nullptr);
              failed_context = write_context_;
            }
            EndLocked();
          } else {
            Reference();
            stream_->Read(&response_, &read_tag_);
            if (writing_) {
              WriteLocked();
            } else if (writes_done_) {
              CloseLocked();
            }
          }
        }
        if (failed != nullptr) failed(failed_context, 0);
        return;
      }
      case Operation::kWrite: {
        pm_write_done done;
        void *context;
        {
          std::lock_guard<std::mutex> lock(mutex_);
          writing_ = false;
          message_.Clear();
          done = std::exchange(write_done_, nullptr);
          context = write_context_;
          if (ok && writes_done_ && !ended_) CloseLocked();
        }
        if (done != nullptr) done(context, ok ? 1 : 0);  // a failed write shows in the status
        return;
      }
      case Operation::kWritesDone:
        return;
      case Operation::kRead: {
        std::lock_guard<std::mutex> lock(mutex_);
        has_response_ = ok;
        EndLocked();
        return;
      }
      case Operation::kFinish: {
        MarkCompleted();
        pm_received_bytes response{nullptr, 0, nullptr};
        if (status_.ok() && has_response_) response = pipemesh::TakeReceivedBytes(response_);
        // OK without an answer breaks the method's contract.
        if (status_.ok() && !has_response_) {
          done_(context_, PM_STATUS_INTERNAL, "the server ended the call without an answer", response);
          return;
        }
        done_(context_, status_.error_code(), status_.error_message().c_str(), response);
        return;
      }
    }
  }

 private:
  // Starts the write `Write` took; the call has started and not ended.
  void WriteLocked() {
    Reference();
    stream_->Write(message_, &write_tag_);
  }

  void CloseLocked() {
    Reference();
    stream_->WritesDone(&writes_done_tag_);
  }

  void EndLocked() {
    if (ended_) return;
    ended_ = true;
    Reference();
    stream_->Finish(&status_, &finish_tag_);
  }

  pm_unary_done done_;
  void *context_;
  grpc::ByteBuffer message_;
  grpc::ByteBuffer response_;
  grpc::Status status_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> stream_;
  std::mutex mutex_;
  pm_write_done write_done_ = nullptr;
  void *write_context_ = nullptr;
  bool started_ = false;
  bool writing_ = false;
  bool writes_done_ = false;
  bool has_response_ = false;
  bool ended_ = false;
};

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
  if (transport != nullptr && transport->max_reconnect_backoff_ms > 0) {
    int backoff = pipemesh::ClampToInt(transport->max_reconnect_backoff_ms);
    arguments.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, backoff);
    arguments.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS,
                     std::min(backoff, 1000));
  }
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

void pm_channel_reset_connect_backoff(pm_channel *channel) {
  grpc::experimental::ChannelResetConnectionBackoff(channel->channel.get());
}

void pm_channel_destroy(pm_channel *channel) { delete channel; }

pm_client_call *pm_client_unary(pm_channel *channel, const char *method,
                                pm_outgoing_bytes request,
                                const pm_call_options *options,
                                pm_unary_done done, void *context) {
  auto *call = new UnaryCall(done, context);
  Configure(&call->context, options);
  call->Start(channel->stub.get(), method, request, ClientLoop::Shared().queue());
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
  call->Start(channel->stub.get(), method, request, ClientLoop::Shared().queue());
  return call;
}

pm_client_call *pm_client_client_stream(pm_channel *channel,
                                        const char *method,
                                        const pm_call_options *options,
                                        pm_unary_done done, void *context) {
  auto *call = new ClientStreamCall(done, context);
  Configure(&call->context, options);
  call->Start(channel->stub.get(), method, ClientLoop::Shared().queue());
  return call;
}

void pm_client_call_write(pm_client_call *call, pm_outgoing_bytes message,
                          pm_write_done done, void *done_context) {
  call->Write(message, done, done_context);
}

void pm_client_call_writes_done(pm_client_call *call) { call->WritesDone(); }

void pm_client_call_request_next(pm_client_call *call) { call->RequestNext(); }

void pm_client_call_cancel(pm_client_call *call) { call->Cancel(); }

void pm_client_call_release(pm_client_call *call) { call->Unreference(); }

int pm_client_loop_is_current(void) { return ClientLoop::IsCurrent() ? 1 : 0; }

void pm_client_loop_post(pm_loop_runner runner, void *runner_context,
                         void *work) {
  ClientLoop::Shared().Post(runner, runner_context, work);
}

}  // extern "C"
