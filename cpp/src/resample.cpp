// Photos too large for the memory budget: scaled down for the engine and the alpha brought back to full size,
// as smat_deploy/runtime/sizing.py and smat_deploy/upsample.py do it, in the same arithmetic:
//
// - Pillow's resampling of a float ("F") image (libImaging/Resample.c: precompute_coeffs with the filter widened
//   by the scale when shrinking, a horizontal then a vertical pass accumulating in double, float storage in
//   between; the source box in float), used for the photo (BILINEAR), a prompt's coverage (BOX) and the guided
//   filter's coefficients (BILINEAR over a source box, strip by strip);
// - PyTorch's nearest (src = floor(dst * in / out)) and upsample.resize_bilinear;
// - the fast guided filter of upsample.GuidedUpsampler with its float32/float64 split (window means add in
//   double; covariances in double, then float32; the 3x3 inverse and the linear model in float32).
//
// Built with -ffp-contract=off (CMakeLists.txt): a fused multiply-add would round differently from numpy.
#include <algorithm>
#include <cmath>

#include "contract.hpp"
#include "internal.hpp"

namespace smat::detail {
namespace {

struct Coefficients {
    int ksize = 0;
    std::vector<int> bounds;  // per output: first source index, count
    std::vector<double> kk;   // per output: ksize weights
};

double bilinear_filter(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}

double box_filter(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }

Coefficients precompute(int in_size, float in0, float in1, int out_size, PillowFilter filter) {
    const double support_base = filter == PillowFilter::Bilinear ? 1.0 : 0.5;
    double filterscale = static_cast<double>(in1 - in0) / out_size;
    const double scale = filterscale;
    if (filterscale < 1.0) filterscale = 1.0;
    const double support = support_base * filterscale;
    Coefficients c;
    c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
    c.bounds.resize(static_cast<std::size_t>(out_size) * 2);
    c.kk.assign(static_cast<std::size_t>(out_size) * c.ksize, 0.0);
    for (int xx = 0; xx < out_size; ++xx) {
        const double center = in0 + (xx + 0.5) * scale;
        double ww = 0.0;
        const double ss = 1.0 / filterscale;
        int xmin = static_cast<int>(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = static_cast<int>(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double* k = &c.kk[static_cast<std::size_t>(xx) * c.ksize];
        for (int x = 0; x < xmax; ++x) {
            const double w = (filter == PillowFilter::Bilinear ? bilinear_filter : box_filter)((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (int x = 0; x < xmax; ++x)
            if (ww != 0.0) k[x] /= ww;
        c.bounds[xx * 2] = xmin;
        c.bounds[xx * 2 + 1] = xmax;
    }
    return c;
}

//! One line of scipy.ndimage.uniform_filter1d (mode "constant", zeros outside): a running sum in double, the
//! first window added in order, then the value entering minus the value leaving, each output the sum / size.
template <typename T>
void running_mean(const double* line, int length, int radius, T* out) {
    const int size = 2 * radius + 1;
    std::vector<double> padded(static_cast<std::size_t>(length) + 2 * radius, 0.0);
    std::copy(line, line + length, padded.begin() + radius);
    double tmp = 0.0;
    for (int k = 0; k < size; ++k) tmp += padded[k];
    out[0] = static_cast<T>(tmp / size);
    for (int k = 1; k < length; ++k) {
        tmp += padded[k + size - 1] - padded[k - 1];
        out[k] = static_cast<T>(tmp / size);
    }
}

//! The mean over the (2r+1)^2 window around each pixel, the window clipped at the borders (upsample._box_mean):
//! scipy's uniform filter down the columns, then along the rows, each pass stored as T, then the share of the
//! window inside the photo undone (a T factor, multiplied in T).
template <typename T, typename In>
std::vector<T> box_mean(const In* values, int width, int height, int radius) {
    const double size = 2.0 * radius + 1;
    std::vector<T> columns(static_cast<std::size_t>(width) * height), out(columns.size());
    std::vector<double> line(std::max(width, height));
    std::vector<T> result(line.size());
    for (int x = 0; x < width; ++x) {
        for (int y = 0; y < height; ++y) line[y] = static_cast<double>(values[static_cast<std::size_t>(y) * width + x]);
        running_mean(line.data(), height, radius, result.data());
        for (int y = 0; y < height; ++y) columns[static_cast<std::size_t>(y) * width + x] = result[y];
    }
    const auto inside = [radius](int index, int length) {
        return static_cast<double>(std::min(index + radius, length - 1) - std::max(index - radius, 0) + 1);
    };
    for (int y = 0; y < height; ++y) {
        for (int x = 0; x < width; ++x) line[x] = static_cast<double>(columns[static_cast<std::size_t>(y) * width + x]);
        running_mean(line.data(), width, radius, result.data());
        for (int x = 0; x < width; ++x) {
            const T factor = static_cast<T>(size * size / (inside(y, height) * inside(x, width)));
            out[static_cast<std::size_t>(y) * width + x] = static_cast<T>(result[x] * factor);
        }
    }
    return out;
}

}  // namespace

std::vector<float> pillow_resize(const float* source, int width, int height, int out_width, int out_height,
                                 PillowFilter filter, const float* box) {
    const float full[4] = {0.0f, 0.0f, static_cast<float>(width), static_cast<float>(height)};
    if (!box) box = full;
    const bool horizontal = out_width != width || box[0] != 0.0f || box[2] != out_width;
    const bool vertical = out_height != height || box[1] != 0.0f || box[3] != out_height;
    const Coefficients ch = precompute(width, box[0], box[2], out_width, filter);
    Coefficients cv = precompute(height, box[1], box[3], out_height, filter);
    const int first = cv.bounds[0];
    const int last = cv.bounds[out_height * 2 - 2] + cv.bounds[out_height * 2 - 1];
    std::vector<float> temp;
    const float* in = source;
    int in_width = width;
    if (horizontal) {
        for (int i = 0; i < out_height; ++i) cv.bounds[i * 2] -= first;
        const int rows = last - first;
        temp.resize(static_cast<std::size_t>(out_width) * rows);
        for (int yy = 0; yy < rows; ++yy)
            for (int xx = 0; xx < out_width; ++xx) {
                const int xmin = ch.bounds[xx * 2], xmax = ch.bounds[xx * 2 + 1];
                const double* k = &ch.kk[static_cast<std::size_t>(xx) * ch.ksize];
                double ss = 0.0;
                const float* row = source + static_cast<std::size_t>(yy + first) * width;
                for (int x = 0; x < xmax; ++x) ss += row[x + xmin] * k[x];
                temp[static_cast<std::size_t>(yy) * out_width + xx] = static_cast<float>(ss);
            }
        in = temp.data();
        in_width = out_width;
    }
    if (!vertical) return std::vector<float>(in, in + static_cast<std::size_t>(in_width) * out_height);
    std::vector<float> out(static_cast<std::size_t>(in_width) * out_height);
    for (int yy = 0; yy < out_height; ++yy) {
        const int ymin = cv.bounds[yy * 2], ymax = cv.bounds[yy * 2 + 1];
        const double* k = &cv.kk[static_cast<std::size_t>(yy) * cv.ksize];
        for (int xx = 0; xx < in_width; ++xx) {
            double ss = 0.0;
            for (int y = 0; y < ymax; ++y) ss += in[static_cast<std::size_t>(y + ymin) * in_width + xx] * k[y];
            out[static_cast<std::size_t>(yy) * in_width + xx] = static_cast<float>(ss);
        }
    }
    return out;
}

std::vector<float> resize_nearest(const float* source, int width, int height, int out_width, int out_height) {
    std::vector<float> out(static_cast<std::size_t>(out_width) * out_height);
    for (int y = 0; y < out_height; ++y) {
        const int sy = std::min(static_cast<int>(static_cast<long long>(y) * height / out_height), height - 1);
        for (int x = 0; x < out_width; ++x) {
            const int sx = std::min(static_cast<int>(static_cast<long long>(x) * width / out_width), width - 1);
            out[static_cast<std::size_t>(y) * out_width + x] = source[static_cast<std::size_t>(sy) * width + sx];
        }
    }
    return out;
}

std::vector<float> resize_bilinear(const float* source, int width, int height, int out_width, int out_height) {
    struct Tap {
        int low, high;
        float weight;
    };
    const auto taps = [](int target, int size) {
        std::vector<Tap> result(target);
        for (int i = 0; i < target; ++i) {
            double position = (i + 0.5) * (static_cast<double>(size) / target) - 0.5;
            position = std::clamp(position, 0.0, static_cast<double>(size - 1));
            const int low = static_cast<int>(std::floor(position));
            result[i] = {low, std::min(low + 1, size - 1), static_cast<float>(position - low)};
        }
        return result;
    };
    const auto ty = taps(out_height, height), tx = taps(out_width, width);
    std::vector<float> rows(static_cast<std::size_t>(out_height) * width);
    for (int y = 0; y < out_height; ++y)
        for (int x = 0; x < width; ++x) {
            const float w = ty[y].weight;
            rows[static_cast<std::size_t>(y) * width + x] = source[static_cast<std::size_t>(ty[y].low) * width + x] * (1 - w) +
                                                            source[static_cast<std::size_t>(ty[y].high) * width + x] * w;
        }
    std::vector<float> out(static_cast<std::size_t>(out_width) * out_height);
    for (int y = 0; y < out_height; ++y)
        for (int x = 0; x < out_width; ++x) {
            const float w = tx[x].weight;
            const float* row = &rows[static_cast<std::size_t>(y) * width];
            out[static_cast<std::size_t>(y) * out_width + x] = row[tx[x].low] * (1 - w) + row[tx[x].high] * w;
        }
    return out;
}

std::vector<float> resize_photo(const std::vector<float>& planes, int width, int height, int out_width, int out_height) {
    const std::size_t plane = static_cast<std::size_t>(width) * height;
    std::vector<float> out;
    out.reserve(static_cast<std::size_t>(out_width) * out_height * 3);
    for (int c = 0; c < 3; ++c) {
        auto channel = pillow_resize(planes.data() + c * plane, width, height, out_width, out_height, PillowFilter::Bilinear);
        for (float& v : channel) v = std::clamp(v, 0.0f, 1.0f);
        out.insert(out.end(), channel.begin(), channel.end());
    }
    return out;
}

std::vector<float> shrink_prompt(const std::vector<float>& mask, int width, int height, int out_width, int out_height) {
    auto small = resize_nearest(mask.data(), width, height, out_width, out_height);
    const auto any = [](const std::vector<float>& values) {
        return std::any_of(values.begin(), values.end(), [](float v) { return v != 0.0f; });
    };
    if (any(small) || !any(mask)) return small;
    std::vector<float> marked(mask.size());
    for (std::size_t i = 0; i < mask.size(); ++i) marked[i] = mask[i] != 0.0f ? 1.0f : 0.0f;
    auto covered = pillow_resize(marked.data(), width, height, out_width, out_height, PillowFilter::Box);
    for (float& v : covered) v = v > 0.0f ? 1.0f : 0.0f;
    return covered;
}

std::vector<float> guided_upsample(const std::vector<float>& alpha, const std::vector<float>& small, int width, int height,
                                   const std::vector<float>& full, int full_width, int full_height) {
    const int r = contract::kGuidedRadius;
    const std::size_t n = static_cast<std::size_t>(width) * height;
    const float* pixels[3] = {small.data(), small.data() + n, small.data() + 2 * n};
    // the guide: window means (double, kept as float) and the inverse of its regularised colour covariance
    std::vector<double> mean_d[3];
    std::vector<float> mean[3];
    for (int c = 0; c < 3; ++c) {
        mean_d[c] = box_mean<double>(pixels[c], width, height, r);
        mean[c].assign(mean_d[c].begin(), mean_d[c].end());
    }
    const int pairs[6][2] = {{0, 0}, {0, 1}, {0, 2}, {1, 1}, {1, 2}, {2, 2}};
    std::vector<float> cov[6];
    std::vector<float> product(n);
    for (int p = 0; p < 6; ++p) {
        const int i = pairs[p][0], j = pairs[p][1];
        for (std::size_t k = 0; k < n; ++k) product[k] = pixels[i][k] * pixels[j][k];
        auto entry = box_mean<double>(product.data(), width, height, r);
        cov[p].resize(n);
        for (std::size_t k = 0; k < n; ++k) {
            const double e = entry[k] - mean_d[i][k] * mean_d[j][k];
            cov[p][k] = static_cast<float>(i == j ? e + contract::kGuidedEps : e);
        }
    }
    std::vector<float> inv[6];
    for (auto& v : inv) v.resize(n);
    for (std::size_t k = 0; k < n; ++k) {
        const float xx = cov[0][k], xy = cov[1][k], xz = cov[2][k], yy = cov[3][k], yz = cov[4][k], zz = cov[5][k];
        float c[6] = {yy * zz - yz * yz, xz * yz - xy * zz, xy * yz - xz * yy,
                      xx * zz - xz * xz, xy * xz - xx * yz, xx * yy - xy * xy};
        float det = xx * c[0];
        det = det + xy * c[1];
        det = det + xz * c[2];
        for (int e = 0; e < 6; ++e) inv[e][k] = c[e] / det;
    }
    // the alpha's linear model at the small size
    const auto mean_alpha = box_mean<double>(alpha.data(), width, height, r);
    std::vector<float> cr[3];
    for (int c = 0; c < 3; ++c) {
        for (std::size_t k = 0; k < n; ++k) product[k] = pixels[c][k] * alpha[k];
        auto entry = box_mean<double>(product.data(), width, height, r);
        cr[c].resize(n);
        for (std::size_t k = 0; k < n; ++k)
            cr[c][k] = static_cast<float>(entry[k] - static_cast<double>(mean[c][k]) * mean_alpha[k]);
    }
    std::vector<float> model[4];
    for (auto& m : model) m.resize(n);
    for (std::size_t k = 0; k < n; ++k) {
        const float xx = inv[0][k], xy = inv[1][k], xz = inv[2][k], yy = inv[3][k], yz = inv[4][k], zz = inv[5][k];
        const float r0 = cr[0][k], r1 = cr[1][k], r2 = cr[2][k];
        float a0 = xx * r0;
        a0 = a0 + xy * r1;
        a0 = a0 + xz * r2;
        float a1 = xy * r0;
        a1 = a1 + yy * r1;
        a1 = a1 + yz * r2;
        float a2 = xz * r0;
        a2 = a2 + yz * r1;
        a2 = a2 + zz * r2;
        model[0][k] = a0;
        model[1][k] = a1;
        model[2][k] = a2;
        float dot = a0 * mean[0][k];
        dot = dot + a1 * mean[1][k];
        dot = dot + a2 * mean[2][k];
        model[3][k] = static_cast<float>(mean_alpha[k] - static_cast<double>(dot));
    }
    std::vector<float> smooth[4];
    for (int m = 0; m < 4; ++m) smooth[m] = box_mean<float>(model[m].data(), width, height, r);
    // applied to the full-size photo, strip by strip as upsample.GuidedUpsampler.__call__ does
    std::vector<float> out(static_cast<std::size_t>(full_width) * full_height);
    const std::size_t full_plane = out.size();
    const int strip = std::max(1, static_cast<int>(contract::kGuidedStripPixels / full_width));
    const double scale = static_cast<double>(height) / full_height;
    for (int start = 0; start < full_height; start += strip) {
        const int stop = std::min(full_height, start + strip);
        const float box[4] = {0.0f, static_cast<float>(start * scale), static_cast<float>(width), static_cast<float>(stop * scale)};
        auto value = pillow_resize(smooth[3].data(), width, height, full_width, stop - start, PillowFilter::Bilinear, box);
        for (int c = 0; c < 3; ++c) {
            const auto a = pillow_resize(smooth[c].data(), width, height, full_width, stop - start, PillowFilter::Bilinear, box);
            const float* photo = full.data() + c * full_plane + static_cast<std::size_t>(start) * full_width;
            for (std::size_t k = 0; k < value.size(); ++k) value[k] = value[k] + a[k] * photo[k];
        }
        std::transform(value.begin(), value.end(), out.begin() + static_cast<std::ptrdiff_t>(start) * full_width,
                       [](float v) { return std::clamp(v, 0.0f, 1.0f); });
    }
    return out;
}

std::vector<float> upsample_alpha(const std::string& method, const std::vector<float>& alpha, const std::vector<float>& small,
                                  int width, int height, const std::vector<float>& full, int full_width, int full_height) {
    if (width == full_width && height == full_height) return alpha;
    std::vector<float> out;
    if (method == "guided") return guided_upsample(alpha, small, width, height, full, full_width, full_height);
    if (method == "bilinear") out = resize_bilinear(alpha.data(), width, height, full_width, full_height);
    else if (method == "nearest") out = resize_nearest(alpha.data(), width, height, full_width, full_height);
    else fail(Status::InvalidArgument, "unknown upsampling '" + method + "': expected one of guided, bilinear, nearest");
    for (float& v : out) v = std::clamp(v, 0.0f, 1.0f);
    return out;
}

}  // namespace smat::detail
