import Foundation
import MeshTensor
import Testing

@testable import MeshData

@Suite struct BundledDatasetTests {
  @Test func digitsHasTheUCIShapeLabelsAndValues() throws {
    let digits = try Datasets.bundled(named: "digits")
    #expect(digits.name == "digits")
    #expect(digits.inputs.shape == [1797, 64])
    #expect(digits.classCount == 10)
    let labels = digits.labels.scalars
    #expect(labels.count == 1797)
    let perClass = (0..<10).map { digit in labels.filter { $0 == Float(digit) }.count }
    #expect(perClass == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    let pixels = digits.inputs.scalars
    #expect(pixels.allSatisfy { $0 >= 0 && $0 <= 16 && $0 == $0.rounded() })
    #expect(pixels.reduce(0, +) == 561_718)
    #expect(Array(pixels[0..<8]) == [0, 0, 5, 13, 9, 1, 0, 0])
    #expect(Array(labels[0..<3]) == [0, 1, 2])
    #expect(Array(pixels[(1000 * 64)..<(1000 * 64 + 4)]) == [0, 0, 1, 14])
    #expect(labels[1000] == 1)
    #expect(Array(pixels[(1796 * 64 + 56)..<(1797 * 64)]) == [0, 1, 8, 12, 14, 12, 1, 0])
    #expect(labels[1796] == 8)
  }

  @Test func digitsReshapesToImagesForAConvolutionalModel() throws {
    let digits = try Datasets.bundled(named: "digits")
    #expect(throws: DatasetError.self) { try digits.validate(featureShape: [1, 8, 8]) }
    let images = try digits.reshaped(featureShape: [1, 8, 8])
    try images.validate(featureShape: [1, 8, 8])
    let (train, validation) = try images.split(validationFraction: 0.2, seed: 1)
    #expect(train.count == 1438)
    #expect(validation.count == 359)
    let normalizer = Normalizer(.minMax, fittedOn: train, perFeature: false)
    let scaled = try normalizer.apply(to: validation).inputs.scalars
    #expect(scaled.allSatisfy { $0 >= 0 && $0 <= 1 })
  }

  @Test func anUnknownNameListsTheBundledDatasets() throws {
    let error = try #require(throws: DatasetError.self) { try Datasets.bundled(named: "mnist") }
    #expect(error.code == .unknownDataset)
    #expect(error.message == "no bundled dataset named 'mnist'; available: digits, shakespeare")
  }

  @Test func theEnvironmentVariableWinsAndIsCheckedWhenSet() async throws {
    try await withTemporaryDirectory { folder in
      let custom = folder.appendingPathComponent("digits")
      try FileManager.default.createDirectory(at: custom, withIntermediateDirectories: true)
      let found = try Datasets.locateBundledFolder(
        named: "digits", environment: ["PIPEMESH_DATASETS": folder.path], executable: nil,
        sourceFile: #filePath)
      #expect(found.standardizedFileURL.path == custom.standardizedFileURL.path)
      let error = try #require(throws: DatasetError.self) {
        try Datasets.locateBundledFolder(
          named: "digits", environment: ["PIPEMESH_DATASETS": custom.path], executable: nil,
          sourceFile: #filePath)
      }
      #expect(error.message.contains("PIPEMESH_DATASETS is \(custom.path)"))
    }
  }

  @Test func theSearchWalksUpFromTheExecutableThenTheSourceFile() async throws {
    try await withTemporaryDirectory { folder in
      let checkout = folder.appendingPathComponent("checkout")
      let bundled = checkout.appendingPathComponent("datasets/digits")
      let binary = checkout.appendingPathComponent(".build/debug/pipemesh")
      try FileManager.default.createDirectory(at: bundled, withIntermediateDirectories: true)
      let fromExecutable = try Datasets.locateBundledFolder(
        named: "digits", environment: [:], executable: binary, sourceFile: "/nonexistent/a.swift")
      #expect(fromExecutable.standardizedFileURL.path == bundled.standardizedFileURL.path)
      let fromSource = try Datasets.locateBundledFolder(
        named: "digits", environment: [:], executable: folder.appendingPathComponent("bin/tool"),
        sourceFile: checkout.appendingPathComponent("Sources/MeshData/File.swift").path)
      #expect(fromSource.standardizedFileURL.path == bundled.standardizedFileURL.path)
      let error = try #require(throws: DatasetError.self) {
        try Datasets.locateBundledFolder(
          named: "digits", environment: [:], executable: folder.appendingPathComponent("bin/tool"),
          sourceFile: "/nonexistent/a.swift")
      }
      #expect(error.message.contains("set PIPEMESH_DATASETS"))
    }
  }
}
