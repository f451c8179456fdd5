/* The C ABI from C: compiled as C99 (the header must be C), and, with SMAT_TEST_MODELS set, a whole run:
 * open the model with the size policy, matte a generated photo with a box at half its size (max_side) and bring
 * the alpha back, embed it once and answer two clicks; and smat_upsample_alpha on its own. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "smat/smat.h"

int main(void) {
    enum { W = 64, H = 48 };
    static uint8_t pixels[W * H * 3];
    static float alpha[W * H];
    const char* models = getenv("SMAT_TEST_MODELS");
    char path[4096];
    smat_engine* engine = NULL;
    smat_predictor* predictor = NULL;
    smat_embedding* embedding = NULL;
    smat_image image;
    smat_options options;
    static float small_alpha[8 * 6], small_rgb[8 * 6 * 3], full_rgb[16 * 12 * 3], full_alpha[16 * 12];
    int i;

    printf("smat %s\n", smat_version());
    if (smat_engine_open("/nonexistent/smat.onnx", NULL, &engine) != SMAT_NOT_FOUND || engine != NULL) return 1;
    printf("expected error: %s\n", smat_last_error());
    for (i = 0; i < 8 * 6; ++i) small_alpha[i] = (float)(i % 7) / 6.0f;
    for (i = 0; i < 8 * 6 * 3; ++i) small_rgb[i] = (float)(i % 5) / 4.0f;
    for (i = 0; i < 16 * 12 * 3; ++i) full_rgb[i] = (float)(i % 9) / 8.0f;
    if (smat_upsample_alpha("guided", small_alpha, 8, 6, small_rgb, full_rgb, 16, 12, full_alpha, 16 * 12) != SMAT_OK) {
        fprintf(stderr, "upsample: %s\n", smat_last_error());
        return 1;
    }
    if (!models || !*models) return 0;

    for (i = 0; i < W * H * 3; ++i) pixels[i] = (uint8_t)((i * 37) % 251);
    image.data = pixels;
    image.width = W;
    image.height = H;
    image.stride = 0;
    image.format = SMAT_RGB8;

    snprintf(path, sizeof path, "%s/smat.onnx", models);
    memset(&options, 0, sizeof options);
    options.size_policy = 1;
    options.max_side = 32;
    options.upsampling = "guided";
    if (smat_engine_open(path, &options, &engine) != SMAT_OK) {
        fprintf(stderr, "open: %s\n", smat_last_error());
        return 1;
    }
    if (smat_engine_matte(engine, &image, "[{\"type\": \"box\", \"x0\": 8, \"y0\": 6, \"x1\": 50, \"y1\": 40}]", NULL,
                          SMAT_STATE_DERIVED, alpha, W * H) != SMAT_OK) {
        fprintf(stderr, "matte: %s\n", smat_engine_last_error(engine));
        return 1;
    }
    smat_engine_close(engine);

    if (smat_predictor_open(models, NULL, &predictor) != SMAT_OK || smat_predictor_embed(predictor, &image, &embedding) != SMAT_OK) {
        fprintf(stderr, "pair: %s\n", smat_last_error());
        return 1;
    }
    for (i = 0; i < 2; ++i) {
        char prompt[128];
        snprintf(prompt, sizeof prompt, "[{\"type\": \"point\", \"x\": %d, \"y\": %d}]", 20 + 10 * i, 24);
        if (smat_predictor_predict(predictor, embedding, prompt, NULL, SMAT_STATE_DERIVED, alpha, W * H) != SMAT_OK) {
            fprintf(stderr, "predict: %s\n", smat_predictor_last_error(predictor));
            return 1;
        }
    }
    smat_embedding_free(embedding);
    smat_predictor_close(predictor);
    printf("alpha[0] = %.6f\n", alpha[0]);
    return 0;
}
