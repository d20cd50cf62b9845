import Foundation
import MeshData
import MeshTensor
import Testing

@Suite struct CSVLoaderTests {
  @Test func readsANumPyCSVWithANamedLabelColumnInTheMiddle() throws {
    try withTemporaryDirectory { folder in
      try runPython(
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

  @Test func readsTheLastColumnAsRegressionTargetsFromAGzippedFile() throws {
    try withTemporaryDirectory { folder in
      try runPython(
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

  @Test func acceptsQuotedHeadersWindowsLineEndingsAndBlankLines() throws {
    try withTemporaryDirectory { folder in
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
  ) throws -> DatasetError {
    try withTemporaryDirectory { folder in
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

  @Test func anEmptyFileOrAHeaderWithoutRowsIsReported() throws {
    let empty = try loadError("\n \n")
    #expect(empty.code == .emptyFile)
    #expect(empty.message.contains("bad.csv"))
    let headerOnly = try loadError("a,label\n")
    #expect(headerOnly.code == .emptyFile)
    #expect(headerOnly.message.contains("no data rows"))
  }

  @Test func aRaggedRowNamesItsLineAndCounts() throws {
    let error = try loadError("a,b,label\n1,2,0\n\n3,4\n")
    #expect(error.code == .malformedFile)
    #expect(error.message == "bad.csv: line 4 has 2 cells but the header has 3 columns")
  }

  @Test func aNonNumericCellNamesItsLineAndColumn() throws {
    let error = try loadError("a,b,label\n1,2,0\n3,x7,1\n")
    #expect(error.code == .malformedFile)
    #expect(
      error.message == "bad.csv: line 3, column 2: the cell is not a finite number; expected a decimal such as 0.25")
    let empty = try loadError("a,b,label\n1,,0\n")
    #expect(empty.message.contains("line 2, column 2"))
  }

  @Test func aLabelThatIsNotAnIntegerIsRejectedForClassification() throws {
    let error = try loadError("a,label\n1,0\n2,1.5\n")
    #expect(error.code == .badLabel)
    #expect(error.message.contains("line 3, column 2: label"))
    #expect(error.message.contains("1.5"))
    let negative = try loadError("a,label\n1,-1\n")
    #expect(negative.code == .badLabel)
  }

  @Test func aLabelOutOfRangeNamesTheClassCount() throws {
    let error = try loadError("a,label\n1,0\n2,3\n", task: .classification(classCount: 3))
    #expect(error.code == .badLabel)
    #expect(error.message == "bad.csv: line 3, column 2: label 3 is outside the 3 classes 0...2")
  }

  /// The header's names are the file's text: counted, not quoted.
  @Test func aMissingLabelColumnCountsTheHeader() throws {
    let error = try loadError("a,b,target\n1,2,3\n")
    #expect(error.code == .malformedFile)
    #expect(error.message.contains("no column named 'label' among the header's 3 columns"))
    #expect(!error.message.contains("target"))
  }

  @Test func aSingleColumnHasNoFeatures() throws {
    let error = try loadError("label\n1\n")
    #expect(error.code == .malformedFile)
    #expect(error.message.contains("at least one feature column"))
  }
}
