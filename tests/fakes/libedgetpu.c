/* FAKE libedgetpu.so.1, for tests only: no Coral Edge TPU (and no Google runtime) exists
 * on a CI machine. Build: gcc -shared -fPIC -o libedgetpu.so.1 libedgetpu.c
 *
 * It implements what the real library exports for TFLite's external-delegate loader
 * (ai_edge_litert / tflite_runtime `load_delegate`, which dlopens the library and calls
 * these two symbols):
 *
 *   TfLiteDelegate* tflite_plugin_create_delegate(char** keys, char** values,
 *                                                 int n, void (*report)(const char*));
 *   void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate);
 *
 * Like the real one it reads the "device" option (usb, usb:N, pci, pci:N) and returns
 * NULL, reporting nothing, when that Edge TPU is not connected. Connected devices are
 * $FAKE_EDGETPU_DEVICES (comma-separated, default "usb:0"; an empty value means none).
 * Its Prepare claims no nodes and returns kTfLiteOk: that is what the real delegate does
 * for a model without edgetpu-custom-op, so the runtime runs every node on the CPU.
 * An Edge TPU-compiled model does not run here: nothing implements its custom op.
 *
 * Each call appends one line to $FAKE_EDGETPU_TRACE when set ("create device=usb:0",
 * "prepare nodes=3", "destroy"), so tests can see the runtime really used the delegate.
 *
 * The struct layouts are the stable prefix of tensorflow/lite/core/c/common.h
 * (TfLiteDelegate in full; TfLiteContext up to GetExecutionPlan).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { kTfLiteOk = 0, kTfLiteError = 1 } TfLiteStatus;

typedef struct TfLiteIntArray {
  int size;
  int data[];
} TfLiteIntArray;

typedef struct TfLiteContext {
  size_t tensors_size;
  TfLiteStatus (*GetExecutionPlan)(struct TfLiteContext* context, TfLiteIntArray** execution_plan);
  /* further fields are not used here */
} TfLiteContext;

typedef struct TfLiteDelegate {
  void* data_;
  TfLiteStatus (*Prepare)(TfLiteContext* context, struct TfLiteDelegate* delegate);
  void* CopyFromBufferHandle;
  void* CopyToBufferHandle;
  void* FreeBufferHandle;
  int64_t flags;
  void* opaque_delegate_builder;
} TfLiteDelegate;

static void trace(const char* fmt, const char* text, long number) {
  const char* path = getenv("FAKE_EDGETPU_TRACE");
  if (!path || !*path) return;
  FILE* fh = fopen(path, "a");
  if (!fh) return;
  if (text)
    fprintf(fh, fmt, text);
  else
    fprintf(fh, fmt, number);
  fputc('\n', fh);
  fclose(fh);
}

/* "usb" matches "usb:0"; "" (no option) matches any device, as in libedgetpu. */
static int connected(const char* wanted) {
  const char* env = getenv("FAKE_EDGETPU_DEVICES");
  char list[256];
  snprintf(list, sizeof list, "%s", env ? env : "usb:0");
  for (char* dev = strtok(list, ","); dev; dev = strtok(NULL, ",")) {
    size_t n = strlen(wanted);
    if (n == 0 || strcmp(dev, wanted) == 0 || (strncmp(dev, wanted, n) == 0 && dev[n] == ':')) return 1;
  }
  return 0;
}

static TfLiteStatus prepare(TfLiteContext* context, TfLiteDelegate* delegate) {
  (void)delegate;
  TfLiteIntArray* plan = NULL;
  if (context->GetExecutionPlan(context, &plan) != kTfLiteOk || !plan) return kTfLiteError;
  trace("prepare nodes=%ld", NULL, (long)plan->size);
  return kTfLiteOk; /* claims no node: every node stays on the CPU kernels */
}

TfLiteDelegate* tflite_plugin_create_delegate(char** keys, char** values, int n,
                                              void (*report)(const char*)) {
  (void)report; /* the real library reports nothing either when no device is found */
  const char* device = "";
  for (int i = 0; i < n; i++) {
    if (strcmp(keys[i], "device") == 0) device = values[i];
  }
  if (!connected(device)) {
    trace("create device=%s: not connected", device, 0);
    return NULL;
  }
  TfLiteDelegate* delegate = calloc(1, sizeof *delegate);
  if (!delegate) return NULL;
  delegate->Prepare = prepare;
  trace("create device=%s", *device ? device : "(any)", 0);
  return delegate;
}

void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate) {
  if (delegate) trace("destroy", "", 0);
  free(delegate);
}
