// swift-tools-version:5.9
// The Swift bindings as a package: the generated C header and modulemap (ZoufangFFI), the
// generated Swift (Zoufang, linked against libzoufang_ffi), and XCTest tests. The Sources
// folders are filled by ../test-swift.sh from the built library; on macOS the same shape takes
// an xcframework instead of the system library.
import PackageDescription

let package = Package(
    name: "Zoufang",
    products: [.library(name: "Zoufang", targets: ["Zoufang"])],
    targets: [
        .systemLibrary(name: "ZoufangFFI", path: "Sources/ZoufangFFI"),
        .target(
            name: "Zoufang",
            dependencies: ["ZoufangFFI"],
            path: "Sources/Zoufang",
            linkerSettings: [.linkedLibrary("zoufang_ffi")]
        ),
        .testTarget(name: "ZoufangTests", dependencies: ["Zoufang"], path: "Tests/ZoufangTests"),
    ]
)
