// C++ tests of the smat library: prompts, images, errors through the C ABI, threads. Model-driven cases
// read SMAT_TEST_MODELS (a folder from `smat-deploy export --interactive`); tests/cpp in the pytest suite
// sets it, and runs this program in the plain and the sanitizer builds. Exit status: the number of failures.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "smat/smat.h"
#include "smat/smat.hpp"

namespace {

int failures = 0, checks = 0;

#define CHECK(condition)                                                                         \
    do {                                                                                         \
        ++checks;                                                                                \
        if (!(condition)) {                                                                      \
            ++failures;                                                                          \
            std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #condition);   \
        }                                                                                        \
    } while (0)

//! `body` throws smat::Error with `status` and a message containing `text`.
void expect_error(const std::function<void()>& body, smat::Status status, const std::string& text, int line) {
    ++checks;
    try {
        body();
        ++failures;
        std::fprintf(stderr, "line %d: expected an error containing '%s', got none\n", line, text.c_str());
    } catch (const smat::Error& err) {
        if (err.status() != status || std::string(err.what()).find(text) == std::string::npos) {
            ++failures;
            std::fprintf(stderr, "line %d: expected status %d with '%s', got %d: %s\n", line, static_cast<int>(status),
                         text.c_str(), static_cast<int>(err.status()), err.what());
        }
    } catch (...) {
        ++failures;
        std::fprintf(stderr, "line %d: expected smat::Error, got another exception\n", line);
    }
}
#define EXPECT_ERROR(body, status, text) expect_error([&] { body; }, smat::Status::status, text, __LINE__)

int marked(const std::vector<std::uint8_t>& mask) {
    int count = 0;
    for (auto v : mask) count += v;
    return count;
}

void test_prompts() {
    // a click rounds half to even (2.5 -> 2, 3.5 -> 4) and marks a (2r+1)^2 square, clipped at the border
    auto mask = smat::rasterize({smat::Point{2.5, 3.5, 1}}, 10, 8);
    CHECK(marked(mask) == 9);
    CHECK(mask[4 * 10 + 2] == 1 && mask[3 * 10 + 1] == 1 && mask[5 * 10 + 3] == 1 && mask[2 * 10 + 2] == 0);
    CHECK(marked(smat::rasterize({smat::Point{0, 0, 2}}, 10, 8)) == 9);
    // a half-open box
    mask = smat::rasterize({smat::Box{1, 2, 4, 5}}, 10, 8);
    CHECK(marked(mask) == 9 && mask[2 * 10 + 1] == 1 && mask[4 * 10 + 3] == 1 && mask[5 * 10 + 4] == 0);
    CHECK(marked(smat::rasterize({smat::Box{-5, -5, 3, 100}}, 10, 8)) == 24);  // clipped
    // a one-point scribble of width 2 covers offsets -1..0 (scipy's origin for even structures)
    smat::Scribble dot;
    dot.points = {{5, 5}};
    dot.width = 2;
    mask = smat::rasterize({dot}, 10, 8);
    CHECK(marked(mask) == 4 && mask[4 * 10 + 4] == 1 && mask[5 * 10 + 5] == 1 && mask[6 * 10 + 6] == 0);
    // a horizontal stroke of width 3 from x=1 to x=6 on row 4: 8 columns (0..7) x 3 rows
    smat::Scribble line;
    line.points = {{1, 4}, {6, 4}};
    line.width = 3;
    CHECK(marked(smat::rasterize({line}, 10, 8)) == 24);
    // errors, with smat-deploy's messages
    EXPECT_ERROR(smat::rasterize({smat::Point{10, 2, 1}}, 10, 8), BadPrompt, "point (10, 2) lies outside the 10x8 image");
    EXPECT_ERROR(smat::rasterize({smat::Box{5, 5, 5, 6}}, 10, 8), BadPrompt, "box needs x0 < x1 and y0 < y1");
    EXPECT_ERROR(smat::rasterize({smat::Box{20, 20, 30, 30}}, 10, 8), BadPrompt, "does not overlap the 10x8 image");
    smat::Scribble far;
    far.points = {{100, 100}, {200, 100}};
    EXPECT_ERROR(smat::rasterize({far}, 10, 8), BadPrompt, "scribble does not touch the 10x8 image");
    smat::MaskPrompt small;
    small.width = 3;
    small.height = 3;
    small.pixels.assign(9, 1);
    EXPECT_ERROR(smat::rasterize({small}, 10, 8), BadPrompt, "mask array is 3x3 but the image is 10x8");
    // JSON
    const auto parsed = smat::parse_prompts(R"([{"type": "point", "x": 3, "y": 4}, {"type": "box", "x0": 1, "y0": 1, "x1": 2, "y1": 2}])");
    CHECK(parsed.size() == 2 && std::get<smat::Point>(parsed[0]).radius == 20);
    EXPECT_ERROR(smat::parse_prompts(R"([{"type": "lasso"}])"), BadPrompt, "prompt[0]: unknown type 'lasso'");
    EXPECT_ERROR(smat::parse_prompts(R"({"type": "point", "x": 1})"), BadPrompt, "prompt[0] (point) is missing y");
    EXPECT_ERROR(smat::parse_prompts(R"({"type": "point", "x": 1, "y": 2, "z": 3})"), BadPrompt, "has unknown field(s) z");
    EXPECT_ERROR(smat::parse_prompts(R"({"type": "point", "x": true, "y": 2})"), BadPrompt, "prompt[0].x must be a finite number");
    EXPECT_ERROR(smat::parse_prompts(R"({"type": "point", "x": 1, "y": 2, "radius": 2.5})"), BadPrompt, "must be a whole number");
    EXPECT_ERROR(smat::parse_prompts("[{"), BadPrompt, "malformed prompt JSON");
    EXPECT_ERROR(smat::load_prompt_file("/nonexistent/p.json"), NotFound, "prompt file not found");
}

void test_c_abi_without_models() {
    CHECK(std::strcmp(smat_version(), smat::version()) == 0);
    std::vector<std::uint8_t> mask(100);
    CHECK(smat_rasterize(R"([{"type": "box", "x0": 0, "y0": 0, "x1": 5, "y1": 2}])", nullptr, 10, 10, mask.data(), mask.size()) == SMAT_OK);
    CHECK(marked(mask) == 10);
    CHECK(smat_rasterize("[]", nullptr, 10, 10, nullptr, 100) == SMAT_INVALID_ARGUMENT);
    CHECK(std::strstr(smat_last_error(), "mask is a null pointer") != nullptr);
    CHECK(smat_rasterize("[]", nullptr, 10, 10, mask.data(), 99) == SMAT_INVALID_ARGUMENT);
    CHECK(smat_rasterize(R"({"type": "lasso"})", nullptr, 10, 10, mask.data(), 100) == SMAT_BAD_PROMPT);
    CHECK(std::strstr(smat_last_error(), "unknown type 'lasso'") != nullptr);
    smat_engine* engine = reinterpret_cast<smat_engine*>(0x1);
    CHECK(smat_engine_open(nullptr, nullptr, &engine) == SMAT_INVALID_ARGUMENT && engine == nullptr);
    CHECK(smat_engine_open("x.onnx", nullptr, nullptr) == SMAT_INVALID_ARGUMENT);
    CHECK(smat_engine_open("/nonexistent/smat.onnx", nullptr, &engine) == SMAT_NOT_FOUND && engine == nullptr);
    CHECK(std::strstr(smat_last_error(), "engine not found: /nonexistent/smat.onnx") != nullptr);
    CHECK(smat_engine_matte(nullptr, nullptr, nullptr, nullptr, -1, nullptr, 0) == SMAT_INVALID_ARGUMENT);
    smat_engine_close(nullptr);
    smat_predictor* predictor = nullptr;
    CHECK(smat_predictor_open("/nonexistent", nullptr, &predictor) == SMAT_NOT_FOUND && predictor == nullptr);
    CHECK(std::strstr(smat_last_error(), "no such folder or file: /nonexistent") != nullptr);
    smat_predictor_close(nullptr);
    smat_embedding_free(nullptr);
    smat_options options{"tensorrt", 0, nullptr, nullptr, 0.0, 0, 0, 0, nullptr};
    CHECK(smat_engine_open("/nonexistent/smat.onnx", &options, &engine) == SMAT_NOT_FOUND);
    // images
    EXPECT_ERROR(smat::read_image("/nonexistent/photo.jpg"), NotFound, "image not found: /nonexistent/photo.jpg");
}

std::vector<std::uint8_t> pattern(int width, int height, int channels, std::size_t stride, int seed) {
    std::vector<std::uint8_t> pixels(stride * height, 0);
    for (int y = 0; y < height; ++y)
        for (int x = 0; x < width * channels; ++x)
            pixels[y * stride + x] = static_cast<std::uint8_t>((x * 7 + y * 13 + seed * 31 + (x * y) % 17) & 255);
    return pixels;
}

float max_diff(const smat::Alpha& a, const smat::Alpha& b) {
    if (a.width != b.width || a.height != b.height) return INFINITY;
    float worst = 0;
    for (std::size_t i = 0; i < a.data.size(); ++i) worst = std::fmax(worst, std::fabs(a.data[i] - b.data[i]));
    return worst;
}

void test_with_models(const std::string& folder) {
    const auto engine = smat::Engine::open(folder + "/smat.onnx");
    CHECK(engine.info().role == "whole" && engine.info().backend == "openvino" && engine.info().min_side == 14);
    const int width = 45, height = 30;
    const auto rgb = pattern(width, height, 3, width * 3 + 5, 1);  // a padded stride, as a cv::Mat ROI has
    const smat::ImageView view{rgb.data(), width, height, width * 3 + 5, smat::PixelFormat::RGB8};
    const smat::Alpha automatic = engine.matte(view);
    CHECK(automatic.width == width && automatic.height == height && automatic.data.size() == std::size_t(width * height));
    bool in_range = true;
    for (float v : automatic.data) in_range = in_range && v >= 0.0f && v <= 1.0f;
    CHECK(in_range);
    // BGR of the same pixels gives the same alpha
    std::vector<std::uint8_t> bgr(rgb);
    for (int y = 0; y < height; ++y)
        for (int x = 0; x < width; ++x) std::swap(bgr[y * (width * 3 + 5) + x * 3], bgr[y * (width * 3 + 5) + x * 3 + 2]);
    CHECK(max_diff(engine.matte({bgr.data(), width, height, width * 3 + 5, smat::PixelFormat::BGR8}), automatic) == 0.0f);
    // bad views
    EXPECT_ERROR(engine.matte({nullptr, width, height, 0, smat::PixelFormat::RGB8}), InvalidArgument, "image data is a null pointer");
    EXPECT_ERROR(engine.matte({rgb.data(), 13, height, 0, smat::PixelFormat::RGB8}), InvalidArgument, "at least 14x14 pixels, got 13x30");
    EXPECT_ERROR(engine.matte({rgb.data(), 0, 0, 0, smat::PixelFormat::RGB8}), InvalidArgument, "at least 14x14");
    EXPECT_ERROR(engine.matte({rgb.data(), width, height, 100, smat::PixelFormat::RGB8}), InvalidArgument, "stride 100 is smaller than a row of 45 pixels (135 bytes)");
    EXPECT_ERROR(engine.matte(view, {smat::Point{45, 3, 2}}), BadPrompt, "point (45, 3) lies outside the 45x30 image");
    EXPECT_ERROR(engine.matte(view, {}, smat::State::Interactive), BadPrompt, "interactive state with an empty prompt");
    // four threads on one engine give what one thread gives
    const smat::Prompts click{smat::Point{20, 15, 4}};
    const smat::Alpha expected = engine.matte(view, click);
    std::vector<smat::Alpha> got(8);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
            got[2 * t] = engine.matte(view, click);
            got[2 * t + 1] = engine.matte(view, click);
        });
    for (auto& thread : threads) thread.join();
    for (const auto& alpha : got) CHECK(max_diff(alpha, expected) == 0.0f);
    // a batch equals single calls
    const auto rgb2 = pattern(width, height, 3, width * 3, 2);
    const smat::ImageView second{rgb2.data(), width, height, 0, smat::PixelFormat::RGB8};
    const auto batch = engine.matte_batch({view, second}, {click, {}});
    CHECK(batch.size() == 2 && max_diff(batch[0], expected) < 1e-5f && max_diff(batch[1], engine.matte(second)) < 1e-5f);
    EXPECT_ERROR(engine.matte_batch({view, {rgb2.data(), 30, 45, 0, smat::PixelFormat::RGB8}}, {{}}), InvalidArgument, "must have one size");
    // the memory gate: a budget too small for this photo is refused in one line before anything runs
    smat::Options tight;
    tight.max_memory_mb = 1;
    const auto small_budget = smat::Engine::open(folder + "/smat.onnx", tight);
    EXPECT_ERROR(small_budget.matte(view), OutOfMemory, "a 45x30 photo needs about");
    EXPECT_ERROR(smat::Predictor::open(folder, tight).embed(view), OutOfMemory, "above the memory budget's");
    // a 48-megapixel camera photo at its own size needs about 50 GB on OpenVINO: over a 20 GB budget it is
    // refused in one line, never a crash (the default budget is tested from tests/cpp/test_cpp_memory.py)
    smat::Options twenty;
    twenty.max_memory_mb = 20000;
    const auto bounded = smat::Engine::open(folder + "/smat.onnx", twenty);
    const std::vector<std::uint8_t> camera(static_cast<std::size_t>(8000) * 6000 * 3, 128);
    EXPECT_ERROR(bounded.matte({camera.data(), 8000, 6000, 0, smat::PixelFormat::RGB8}), OutOfMemory,
                 "a 8000x6000 photo needs about 50,");
    // the pair: embed once, five clicks; against the whole model
    const auto pair = smat::Predictor::open(folder);
    CHECK(pair.encoder_info().role == "encoder" && pair.decoder_info().role == "decoder");
    const auto embedding = pair.embed(view);
    CHECK(embedding.width() == width && embedding.height() == height && embedding.bytes() > 0);
    for (int i = 0; i < 5; ++i) {
        const smat::Prompts prompts{smat::Point{5.0 + 8 * i, 3.0 + 5 * i, 3}};
        CHECK(max_diff(pair.predict(embedding, prompts), engine.matte(view, prompts)) < 1e-5f);
    }
    EXPECT_ERROR(smat::Engine::open(folder + "/smat_encoder.onnx"), BadModel, "is the interactive pair's encoder, not a whole model");
    EXPECT_ERROR(smat::Engine::open(folder), InvalidArgument, "is a folder");
    EXPECT_ERROR(smat::Predictor::open(folder + "/smat.onnx"), BadModel, "smat.onnx is a whole model, not the pair's encoder");
    EXPECT_ERROR(smat::Predictor::open(folder + "/smat_decoder.onnx"), BadModel, "is the pair's decoder, not its encoder");
    smat::Options trt;
    trt.backend = "tensorrt";
    EXPECT_ERROR(smat::Engine::open(folder + "/smat.onnx", trt), Unsupported, "backend 'tensorrt' is not built into this library");
    smat::Options bad_precision;
    bad_precision.inference_precision = "f8";
    EXPECT_ERROR(smat::Engine::open(folder + "/smat.onnx", bad_precision), InvalidArgument, "inference_precision 'f8'");

    // the C ABI on the same model
    smat_engine* handle = nullptr;
    CHECK(smat_engine_open((folder + "/smat.onnx").c_str(), nullptr, &handle) == SMAT_OK && handle);
    std::vector<float> alpha(width * height);
    const smat_image image{rgb.data(), width, height, static_cast<size_t>(width * 3 + 5), SMAT_RGB8};
    CHECK(smat_engine_matte(handle, &image, R"([{"type": "point", "x": 20, "y": 15, "radius": 4}])", nullptr, SMAT_STATE_DERIVED,
                            alpha.data(), alpha.size()) == SMAT_OK);
    float worst = 0;
    for (std::size_t i = 0; i < alpha.size(); ++i) worst = std::fmax(worst, std::fabs(alpha[i] - expected.data[i]));
    CHECK(worst == 0.0f);
    CHECK(smat_engine_matte(handle, &image, nullptr, nullptr, SMAT_STATE_DERIVED, alpha.data(), alpha.size() - 1) == SMAT_INVALID_ARGUMENT);
    CHECK(std::strstr(smat_engine_last_error(handle), "this photo needs 1350") != nullptr);
    const smat_image narrow{rgb.data(), width, height, 10, SMAT_RGB8};
    CHECK(smat_engine_matte(handle, &narrow, nullptr, nullptr, -1, alpha.data(), alpha.size()) == SMAT_INVALID_ARGUMENT);
    CHECK(std::strstr(smat_last_error(), "stride 10 is smaller") != nullptr);
    const smat_image null_pixels{nullptr, width, height, 0, SMAT_RGB8};
    CHECK(smat_engine_matte(handle, &null_pixels, nullptr, nullptr, -1, alpha.data(), alpha.size()) == SMAT_INVALID_ARGUMENT);
    CHECK(smat_engine_matte(handle, &image, R"([{"type": "lasso"}])", nullptr, -1, alpha.data(), alpha.size()) == SMAT_BAD_PROMPT);
    CHECK(smat_engine_matte(handle, &image, nullptr, nullptr, 7, alpha.data(), alpha.size()) == SMAT_INVALID_ARGUMENT);
    smat_engine_close(handle);
    smat_predictor* predictor = nullptr;
    CHECK(smat_predictor_open(folder.c_str(), nullptr, &predictor) == SMAT_OK);
    smat_embedding* embedded = nullptr;
    CHECK(smat_predictor_embed(predictor, &image, &embedded) == SMAT_OK && embedded);
    int32_t ew = 0, eh = 0;
    CHECK(smat_embedding_size(embedded, &ew, &eh) == SMAT_OK && ew == width && eh == height);
    CHECK(smat_predictor_predict(predictor, embedded, R"([{"type": "point", "x": 20, "y": 15, "radius": 4}])", nullptr, -1,
                                 alpha.data(), alpha.size()) == SMAT_OK);
    worst = 0;
    for (std::size_t i = 0; i < alpha.size(); ++i) worst = std::fmax(worst, std::fabs(alpha[i] - expected.data[i]));
    CHECK(worst < 1e-5f);
    CHECK(smat_predictor_predict(predictor, nullptr, nullptr, nullptr, -1, alpha.data(), alpha.size()) == SMAT_INVALID_ARGUMENT);
    smat_embedding_free(embedded);
    smat_predictor_close(predictor);
}

}  // namespace

int main() {
    test_prompts();
    test_c_abi_without_models();
    const char* models = std::getenv("SMAT_TEST_MODELS");
    if (models && *models) {
        try {
            test_with_models(models);
        } catch (const std::exception& err) {
            ++failures;
            std::fprintf(stderr, "model tests: unexpected exception: %s\n", err.what());
        }
    } else {
        std::printf("model cases not run: set SMAT_TEST_MODELS to an export folder with smat.onnx and the pair\n");
    }
    std::printf("%d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
