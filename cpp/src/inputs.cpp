// What callers hand the library, turned into the contract's tensors (smat_deploy/runtime/inputs.py).
#include <algorithm>
#include <array>

#include "internal.hpp"

namespace smat::detail {

namespace {
//! uint8 / 255 in float32 (as smat_deploy/runtime/inputs.py divides), looked up rather than divided per pixel.
const float* unit_values() {
    static const auto table = [] {
        std::array<float, 256> values{};
        for (int v = 0; v < 256; ++v) values[v] = static_cast<float>(v) / 255.0f;
        return values;
    }();
    return table.data();
}

int channels_of(PixelFormat format) {
    switch (format) {
        case PixelFormat::RGB8:
        case PixelFormat::BGR8: return 3;
        case PixelFormat::RGBA8:
        case PixelFormat::BGRA8: return 4;
        case PixelFormat::GRAY8: return 1;
    }
    fail(Status::InvalidArgument, "unknown pixel format " + std::to_string(static_cast<int>(format)));
}
}  // namespace

void append_image(const ImageView& image, const ModelInfo& limits, std::vector<float>& out) {
    const int channels = channels_of(image.format);
    if (!image.data) fail(Status::InvalidArgument, "image data is a null pointer");
    if (image.width < limits.min_side || image.height < limits.min_side) {
        fail(Status::InvalidArgument, "image must be at least " + std::to_string(limits.min_side) + "x" +
                                          std::to_string(limits.min_side) + " pixels, got " + std::to_string(image.width) +
                                          "x" + std::to_string(image.height) + " (WxH)");
    }
    if (image.width > limits.max_width || image.height > limits.max_height) {
        fail(Status::InvalidArgument, "image is " + std::to_string(image.width) + "x" + std::to_string(image.height) +
                                          ", above the model's limit of " + std::to_string(limits.max_width) + "x" +
                                          std::to_string(limits.max_height) + " (WxH)");
    }
    const std::size_t row = static_cast<std::size_t>(image.width) * channels;
    const std::size_t stride = image.stride ? image.stride : row;
    if (stride < row) {
        fail(Status::InvalidArgument, "image stride " + std::to_string(stride) + " is smaller than a row of " +
                                          std::to_string(image.width) + " pixels (" + std::to_string(row) + " bytes)");
    }
    const std::size_t plane = static_cast<std::size_t>(image.width) * image.height;
    const std::size_t base = out.size();
    out.resize(base + 3 * plane);
    float* planes[3] = {&out[base], &out[base + plane], &out[base + 2 * plane]};
    const bool bgr = image.format == PixelFormat::BGR8 || image.format == PixelFormat::BGRA8;
    const float* unit = unit_values();
    const int red = channels == 1 ? 0 : (bgr ? 2 : 0), green = channels == 1 ? 0 : 1, blue = channels == 1 ? 0 : (bgr ? 0 : 2);
    for (int y = 0; y < image.height; ++y) {
        const std::uint8_t* in = image.data + static_cast<std::size_t>(y) * stride;
        const std::size_t at = static_cast<std::size_t>(y) * image.width;
        float* r = planes[0] + at;
        float* g = planes[1] + at;
        float* b = planes[2] + at;
        for (int x = 0; x < image.width; ++x, in += channels) {
            r[x] = unit[in[red]];
            g[x] = unit[in[green]];
            b[x] = unit[in[blue]];
        }
    }
}

bool append_prompt(const Prompts& prompts, int width, int height, std::vector<float>& out) {
    const std::size_t base = out.size();
    const std::size_t plane = static_cast<std::size_t>(width) * height;
    if (prompts.empty()) {
        out.resize(base + plane, 0.0f);
        return false;
    }
    const auto mask = rasterize(prompts, width, height);
    out.resize(base + plane);
    bool marked = false;
    for (std::size_t i = 0; i < plane; ++i) {
        out[base + i] = mask[i] ? 1.0f : 0.0f;
        marked = marked || mask[i];
    }
    return marked;
}

float state_value(State state, bool marked, int sample) {
    switch (state) {
        case State::Derived: return marked ? 1.0f : 0.0f;
        case State::Automatic: return 0.0f;
        case State::Interactive:
            if (!marked) {
                fail(Status::BadPrompt, "interactive state with an empty prompt (sample " + std::to_string(sample) +
                                            "): mark at least one pixel or use state 0");
            }
            return 1.0f;
    }
    fail(Status::InvalidArgument, "state must be 0 (automatic), 1 (interactive) or derived (-1), got " +
                                      std::to_string(static_cast<int>(state)));
}

}  // namespace smat::detail
