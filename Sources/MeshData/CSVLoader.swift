import Foundation
import MeshTensor

/// Which CSV column holds the label.
public enum CSVLabelColumn: Sendable, Equatable {
  /// The column whose header cell is this name.
  case named(String)
  /// The rightmost column.
  case last
}

extension Datasets {
  /// Loads a CSV file (optionally gzip-compressed) with a header row: one label column and
  /// numeric feature columns, one example per line. Features have shape `[columns − 1]`.
  ///
  /// Cells are separated by commas and may be wrapped in double quotes; quoted commas are not
  /// supported. Blank lines are skipped. Errors name the file, the 1-based line and the column.
  public static func csv(
    at url: URL, labelColumn: CSVLabelColumn = .named("label"), task: LabelTask = .classification()
  ) throws -> Dataset {
    let file = url.lastPathComponent
    let text = String(decoding: try readPossiblyGzippedFile(url), as: UTF8.self)
    // "\r\n" is a single Character in Swift, so split on newline characters, not on "\n".
    var lines = text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated()
      .map { (number: $0.offset + 1, cells: $0.element) }
      .filter { !$0.cells.allSatisfy(\.isWhitespace) }
      .makeIterator()
    guard let header = lines.next() else {
      throw DatasetError(.emptyFile, "\(file): is empty; expected a header row and data rows")
    }
    let names = cells(of: header.cells)
    let labelIndex: Int
    switch labelColumn {
    case .last:
      labelIndex = names.count - 1
    case .named(let wanted):
      guard let index = names.firstIndex(of: wanted) else {
        throw DatasetError(
          .malformedFile,
          "\(file): line \(header.number): no column named '\(wanted.count > 200 ? wanted.prefix(200) + "… (cut)" : wanted)' "
            + "among the header's \(names.count) columns; pass labelColumn: .named(...) or .last")
      }
      labelIndex = index
    }
    guard names.count >= 2 else {
      throw DatasetError(
        .malformedFile,
        "\(file): line \(header.number): the header has \(names.count) column; "
          + "expected at least one feature column and a label column")
    }
    var features: [Float] = []
    var labels: [Float] = []
    var rows = 0
    while let line = lines.next() {
      let row = cells(of: line.cells)
      guard row.count == names.count else {
        throw DatasetError(
          .malformedFile,
          "\(file): line \(line.number) has \(row.count) cells but the header has \(names.count) columns")
      }
      for (column, cell) in row.enumerated() {
        // Positions only: an error may reach a caller who must not read the file.
        let location = "\(file): line \(line.number), column \(column + 1)"
        guard let value = Float(cell), value.isFinite else {
          throw DatasetError(
            .malformedFile, "\(location): the cell is not a finite number; expected a decimal such as 0.25")
        }
        if column != labelIndex {
          features.append(value)
          continue
        }
        if case .classification(let classCount) = task,
          let problem = Dataset.classLabelProblem(value, classCount: classCount)
        {
          throw DatasetError(.badLabel, "\(location): label \(problem)")
        }
        labels.append(value)
      }
      rows += 1
    }
    guard rows > 0 else {
      throw DatasetError(.emptyFile, "\(file): has a header but no data rows")
    }
    return try make(
      name: datasetName(for: url),
      inputs: Tensor(shape: [rows, names.count - 1], scalars: features),
      labels: Tensor(shape: [rows], scalars: labels), task: task)
  }

  /// The cells of one CSV line, trimmed of white space and of enclosing double quotes.
  private static func cells(of line: Substring) -> [String] {
    line.split(separator: ",", omittingEmptySubsequences: false).map { cell in
      var text = cell.trimmingCharacters(in: .whitespacesAndNewlines)
      if text.count >= 2, text.first == "\"", text.last == "\"" {
        text = String(text.dropFirst().dropLast())
      }
      return text
    }
  }
}
