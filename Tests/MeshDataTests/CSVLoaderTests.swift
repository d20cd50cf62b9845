import Foundation
import MeshData
import MeshTensor
import Testing

@Suite struct CSVLoaderTests {
  @Test func readsANumPyCSVWithANamedLabelColumnInTheMiddle() async throws {
    try await withTemporaryDirectory { folder in
      try await runPython(
        """
        import numpy as np
        a = np.array([[0.5, 1, 2], [1.5, 2, 0], [2.25, 0, 1e-3]])
        np.savetxt('data.csv', a, delimiter=',', header='f0,label,f1', comments='')
        """, in: folder)
      let dataset = try Datasets.csv(at: folder.appendingPathComponent("data.csv"))
      #expect(dataset.name == "data")
      #expect(dataset.count == 3)
      #expect(dataset.featureShape == [2])
      #expect(dataset.inputs.scalars == [0.5, 2, 1.5, 0, 2.25, 0.001])
      #expect(dataset.labels.shape == [3])
      #expect(dataset.labels.scalars == [1, 2, 0])
      #expect(dataset.classCount == 3)
    }
  }

  @Test func readsTheLastColumnAsRegressionTargetsFromAGzippedFile() async throws {
    try await withTemporaryDirectory { folder in
      try await runPython(
        """
        import gzip, numpy as np
        a = np.array([[1, 2, 0.25], [3, 4, -7.5]], dtype=np.float32)
        with gzip.open('points.csv.gz', 'wt') as f:
            np.savetxt(f, a, delimiter=',', header='x,y,target', comments='')
        """, in: folder)
      let dataset = try Datasets.csv(
        at: folder.appendingPathComponent("points.csv.gz"), labelColumn: .last, task: .regression)
      #expect(dataset.name == "points")
      #expect(dataset.inputs.shape == [2, 2])
      #expect(dataset.inputs.scalars == [1, 2, 3, 4])
      #expect(dataset.labels.shape == [2, 1])
      #expect(dataset.labels.scalars == [0.25, -7.5])
      #expect(dataset.classCount == nil)
    }
  }

  @Test func acceptsQuotedHeadersWindowsLineEndingsAndBlankLines() async throws {
    try await withTemporaryDirectory { folder in
      let url = try writeFile("\"a\",\"label\"\r\n1,0\r\n\r\n2,1\r\n", named: "q.csv", in: folder)
      let dataset = try Datasets.csv(at: url, task: .classification(classCount: 4))
      #expect(dataset.inputs.scalars == [1, 2])
      #expect(dataset.labels.scalars == [0, 1])
      #expect(dataset.classCount == 4)
    }
  }

  /// Loads `text` as a CSV file and returns the error it throws.
  private func loadError(
    _ text: String, labelColumn: CSVLabelColumn = .named("label"),
    task: LabelTask = .classification()
  ) async throws -> DatasetError {
    try await withTemporaryDirectory { folder in
      let url = try writeFile(text, named: "bad.csv", in: folder)
      return try #require(throws: DatasetError.self) {
        try Datasets.csv(at: url, labelColumn: labelColumn, task: task)
      }
    }
  }

  @Test func aMissingFileIsNamed() throws {
    let error = try #require(throws: DatasetError.self) {
      try Datasets.csv(at: URL(fileURLWithPath: "/nonexistent/pipemesh/none.csv"))
    }
    #expect(error.code == .fileNotFound)
    #expect(error.message.contains("/nonexistent/pipemesh/none.csv"))
  }

  @Test func anEmptyFileOrAHeaderWithoutRowsIsReported() async throws {
    let empty = try await loadError("\n \n")
    #expect(empty.code == .emptyFile)
    #expect(empty.message.contains("bad.csv"))
    let headerOnly = try await loadError("a,label\n")
    #expect(headerOnly.code == .emptyFile)
    #expect(headerOnly.message.contains("no data rows"))
  }

  @Test func aRaggedRowNamesItsLineAndCounts() async throws {
    let error = try await loadError("a,b,label\n1,2,0\n\n3,4\n")
    #expect(error.code == .malformedFile)
    #expect(error.message == "bad.csv: line 4 has 2 cells but the header has 3 columns")
  }

  @Test func aNonNumericCellNamesItsLineAndColumn() async throws {
    let error = try await loadError("a,b,label\n1,2,0\n3,x7,1\n")
    #expect(error.code == .malformedFile)
    #expect(
      error.message == "bad.csv: line 3, column 2: the cell is not a finite number; expected a decimal such as 0.25")
    let empty = try await loadError("a,b,label\n1,,0\n")
    #expect(empty.message.contains("line 2, column 2"))
  }

  @Test func aLabelThatIsNotAnIntegerIsRejectedForClassification() async throws {
    let error = try await loadError("a,label\n1,0\n2,1.5\n")
    #expect(error.code == .badLabel)
    #expect(error.message.contains("line 3, column 2: label"))
    #expect(error.message.contains("1.5"))
    let negative = try await loadError("a,label\n1,-1\n")
    #expect(negative.code == .badLabel)
  }

  @Test func aLabelOutOfRangeNamesTheClassCount() async throws {
    let error = try await loadError("a,label\n1,0\n2,3\n", task: .classification(classCount: 3))
    #expect(error.code == .badLabel)
    #expect(error.message == "bad.csv: line 3, column 2: label 3 is outside the 3 classes 0...2")
  }

  /// The header's names are the file's text: counted, not quoted.
  @Test func aMissingLabelColumnCountsTheHeader() async throws {
    let error = try await loadError("a,b,target\n1,2,3\n")
    #expect(error.code == .malformedFile)
    #expect(error.message.contains("no column named 'label' among the header's 3 columns"))
    #expect(!error.message.contains("target"))
  }

  @Test func aSingleColumnHasNoFeatures() async throws {
    let error = try await loadError("label\n1\n")
    #expect(error.code == .malformedFile)
    #expect(error.message.contains("at least one feature column"))
  }
}
