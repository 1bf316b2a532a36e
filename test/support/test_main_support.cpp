// Anchors the support library; real support lives beside it.
namespace singleflight::test {
int support_anchor = 0;
}  // namespace singleflight::test
