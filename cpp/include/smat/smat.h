/* smat.h: the C ABI of the smat library (SMat matting on models written by `smat-deploy export`).
 *
 * For C, Rust, Go, C# and any language with a C FFI. Rules:
 *  - Opaque handles: smat_engine (the whole model), smat_predictor (the interactive pair) and
 *    smat_embedding (a photo embedded once). Each *_open / *_embed has a matching *_close / *_free.
 *  - Every call returns an smat_status; SMAT_OK (0) is success. The message of the last failure is
 *    smat_last_error() (per thread, valid until the thread's next smat call) and, for a handle,
 *    smat_engine_last_error() / smat_predictor_last_error() (the handle's last failure on any thread).
 *  - Output buffers belong to the caller: an alpha of width x height floats, row-major, in [0, 1].
 *  - No C++ exception ever crosses this boundary; a null pointer is SMAT_INVALID_ARGUMENT.
 *  - Engines and predictors may be called from several threads at once; an embedding is read-only.
 *
 * Prompts are the JSON text of a prompt file (`smat-deploy matte --prompt P.json` reads the same):
 *   [{"type": "point", "x": 320, "y": 240, "radius": 20},
 *    {"type": "box", "x0": 10, "y0": 20, "x1": 300, "y1": 400},
 *    {"type": "scribble", "points": [[10, 10], [50, 60]], "width": 5},
 *    {"type": "mask", "path": "mask.png"}]
 * NULL or "" means no prompt (automatic matting); `mask` paths are relative to `base_dir` (NULL: ".").
 * `state`: SMAT_STATE_DERIVED (interactive when the prompt marks a pixel), SMAT_STATE_AUTOMATIC or
 * SMAT_STATE_INTERACTIVE.
 */
#ifndef SMAT_H
#define SMAT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SMAT_ABI_VERSION 2 /* 2: smat_options gained the size policy; smat_upsample_alpha */

typedef enum smat_status {
    SMAT_OK = 0,
    SMAT_INVALID_ARGUMENT = 1, /* a null pointer, a bad size or stride, a buffer too small */
    SMAT_NOT_FOUND = 2,        /* a model, manifest, image or mask file that does not exist */
    SMAT_BAD_MODEL = 3,        /* not an SMat model, a truncated file, a pair that does not belong together */
    SMAT_BAD_PROMPT = 4,       /* a prompt outside the photo, malformed JSON, an unknown prompt kind */
    SMAT_BAD_IMAGE = 5,        /* an unreadable or corrupt PNG/JPEG */
    SMAT_BACKEND_ERROR = 6,    /* the inference runtime failed */
    SMAT_OUT_OF_MEMORY = 7,
    SMAT_UNSUPPORTED = 8,      /* a backend or feature not built into this library */
    SMAT_INTERNAL = 9
} smat_status;

typedef enum smat_pixel_format {
    SMAT_RGB8 = 0,
    SMAT_BGR8 = 1, /* OpenCV's default */
    SMAT_RGBA8 = 2,
    SMAT_BGRA8 = 3,
    SMAT_GRAY8 = 4
} smat_pixel_format;

typedef enum smat_state { SMAT_STATE_DERIVED = -1, SMAT_STATE_AUTOMATIC = 0, SMAT_STATE_INTERACTIVE = 1 } smat_state;

/* A borrowed view of 8-bit pixels; stride: bytes from one row to the next (0: tightly packed). */
typedef struct smat_image {
    const uint8_t* data;
    int32_t width;
    int32_t height;
    size_t stride;
    smat_pixel_format format;
} smat_image;

/* Options for opening; NULL means the defaults. Zero-initialise and set what you need. */
typedef struct smat_options {
    const char* backend;             /* NULL: "openvino" */
    int32_t threads;                 /* 0: the backend's default */
    const char* inference_precision; /* NULL: "f32" (also "bf16", "f16") */
    const char* precision;           /* smat_predictor_open on a folder: NULL "float32", or "float32_cpu", "fp16", ... */
    double max_memory_mb;            /* a call's memory budget: 0 60% of the available memory (+ resident), < 0 no check;
                                        a photo predicted not to fit is refused with SMAT_OUT_OF_MEMORY before it runs */
    int32_t size_policy;             /* engines: non-zero runs a photo that does not fit (or is above max_side) scaled
                                        down, and brings its alpha back to the photo's size (smat-deploy's policy) */
    int32_t scale_to;                /* 0: 1568, the long side a photo scaled to fit the budget gets at most */
    int32_t max_side;                /* 0: none; else every photo's long side at most this */
    const char* upsampling;          /* NULL: "guided" (from the full-size photo), or "bilinear", "nearest" */
} smat_options;

typedef struct smat_engine smat_engine;
typedef struct smat_predictor smat_predictor;
typedef struct smat_embedding smat_embedding;

/* "MAJOR.MINOR.PATCH" of the library. */
const char* smat_version(void);
/* The calling thread's last error message ("" when none). */
const char* smat_last_error(void);

/* The whole model (smat.onnx beside its manifest smat.json). */
smat_status smat_engine_open(const char* model_path, const smat_options* options, smat_engine** engine);
/* Matte one photo into `alpha` (capacity in floats, at least width * height). */
smat_status smat_engine_matte(smat_engine* engine, const smat_image* image, const char* prompts_json,
                              const char* base_dir, int32_t state, float* alpha, size_t alpha_capacity);
const char* smat_engine_last_error(const smat_engine* engine);
void smat_engine_close(smat_engine* engine); /* NULL is allowed */

/* The interactive pair: a folder holding smat_encoder.onnx and smat_decoder.onnx, or the encoder file. */
smat_status smat_predictor_open(const char* path, const smat_options* options, smat_predictor** predictor);
smat_status smat_predictor_embed(smat_predictor* predictor, const smat_image* image, smat_embedding** embedding);
smat_status smat_predictor_predict(smat_predictor* predictor, const smat_embedding* embedding, const char* prompts_json,
                                   const char* base_dir, int32_t state, float* alpha, size_t alpha_capacity);
const char* smat_predictor_last_error(const smat_predictor* predictor);
void smat_predictor_close(smat_predictor* predictor);
/* The embedded photo's size. */
smat_status smat_embedding_size(const smat_embedding* embedding, int32_t* width, int32_t* height);
void smat_embedding_free(smat_embedding* embedding);

/* A PNG or JPEG photo read as smat-deploy reads it (8-bit RGB, EXIF orientation applied): call with
 * rgb = NULL to learn the size, then with a buffer of at least width * height * 3 bytes. */
smat_status smat_read_image(const char* path, int32_t* width, int32_t* height, uint8_t* rgb, size_t rgb_capacity);

/* The predicted peak memory in MB of one OpenVINO call (role "whole", "encoder", "decoder" or "pair"). */
smat_status smat_estimate_memory_mb(const char* role, int32_t batch, int32_t height, int32_t width, double* mb);

/* An alpha made at small_width x small_height brought back to width x height as smat-deploy does (method "guided",
 * "bilinear" or "nearest"); `small_rgb` and `rgb` are the photo at both sizes, float RGB in [0, 1], row by row
 * (both ignored but for "guided"); `out` holds at least width * height floats. */
smat_status smat_upsample_alpha(const char* method, const float* alpha, int32_t small_width, int32_t small_height,
                                const float* small_rgb, const float* rgb, int32_t width, int32_t height, float* out,
                                size_t out_capacity);

/* The prompt mask smat-deploy draws for `prompts_json` at width x height: mask[y * width + x] is 0 or 1. */
smat_status smat_rasterize(const char* prompts_json, const char* base_dir, int32_t width, int32_t height, uint8_t* mask,
                           size_t mask_capacity);

#ifdef __cplusplus
}
#endif

#endif /* SMAT_H */
